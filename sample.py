"""
Tell stories with a trained model:

    python sample.py --out_dir=out --start="Once upon a time" --num_samples=3

Decoding strategies:
    --temperature=0             greedy: always the single most likely next token
    --temperature=0.8           sampling from softmax(logits / temperature); < 1 is safer, > 1 wilder
      --top_k=50                ... only among the 50 most likely tokens
      --top_p=0.9               ... only among the most likely tokens that hold 90% of the probability
                                (nucleus sampling, Holtzman et al. 2020); top_k and top_p combine
    --beam_width=4              beam search: keep the 4 most likely sequences so far, print the best.
                                Deterministic, so temperature/top_k/top_p don't apply, and it prints
                                when done (the best beam is only known at the end) instead of streaming.

The prompt: --start=TEXT, --start=FILE:path (a UTF-8 file's text, trailing newlines dropped; an empty
file counts as an empty prompt), or --start='' (the default) for a story of the model's own. Training
puts <|endoftext|> before every story, so every prompt is placed after one: the model reads it as the
opening of a new story. A prompt of only spaces is refused as a likely quoting mistake.
--interactive=True reads one prompt per line from stdin until EOF; an empty line asks for a fresh story.
The num_samples stories of a prompt are decoded together, as one batch (faster than one at a time), and
each is printed when the batch ends; a single story (or --stream=True) prints token by token instead.
Same --seed, same stories (on the same device, with the same settings): story i of every prompt draws its
random numbers from its own generator, seeded with seed + i, whatever the other stories draw. Streamed one at
a time, story i is exactly the story num_samples=1 gives with seed + i; a batch's matrix products may round
differently from a single row's, so a batched story can part from its streamed twin after some tokens.
Stories go to stdout and everything else to stderr, so `python sample.py > stories.txt` keeps only stories.
"""
import codecs
import sys

import torch

import decode
import rundir
import tokenizer
from configurator import configure
from device import DEVICE, DTYPE, check_device, torch_dtype
from model import GPT

# -----------------------------------------------------------------------------
out_dir = 'out'
ckpt = 'best'           # 'best' | 'last' (out_dir/best.pt, out_dir/last.pt) | a path (looked up in out_dir first)
start = ''              # prompt text | 'FILE:path' | '' for a fresh story
num_samples = 3         # stories per prompt, decoded as one batch
stream = False          # print each story token by token, decoding them one at a time (a single story always streams)
max_new_tokens = 256
temperature = 0.8       # 0 = greedy
top_k = 0               # 0 = off
top_p = 1.0             # 1.0 = off
beam_width = 1          # > 1 = beam search
seed = 1337
device = DEVICE
dtype = DTYPE           # of the weights and activations
compile = torch.cuda.is_available()  # torch.compile the decoding step (CUDA graphs on a GPU); on a CPU its compile
                                     # time outweighs what it saves for a few stories: README's measured table
threads = 0             # torch CPU threads; 0 = 1 for a single story (or --stream), every core for a batch
interactive = False     # read prompts from stdin, one per line, until EOF
stop_at_eot = True      # end a story at <|endoftext|>; False keeps going into the next one
# -----------------------------------------------------------------------------
config = configure(globals())

# Refuse settings that can't mean what the user wants, before the slow checkpoint load.
sampling = dict(temperature=temperature, top_k=top_k or None, top_p=None if top_p == 1 else top_p)
decode.check_sampling(**sampling)
for broken, message in (
        (beam_width < 1 or num_samples < 1 or max_new_tokens < 1, f'beam_width, num_samples and max_new_tokens must be '
         f'>= 1; got {beam_width}, {num_samples}, {max_new_tokens}'),
        (beam_width > 1 and (top_k or top_p < 1), "beam search doesn't sample, so top_k/top_p do nothing; drop them "
         "or set --beam_width=1"),
        (beam_width == 1 and temperature == 0 and (top_k or top_p < 1), "greedy decoding (temperature=0) doesn't "
         "sample, so top_k/top_p do nothing; drop them or set --temperature above 0"),
        (interactive and start, "--start and --interactive=True both given; in interactive mode type the prompts on stdin"),
        (start and not start.strip(), "the prompt is only whitespace; pass some text, or --start='' for a fresh story"),
        (not 0 <= seed <= 2**64 - num_samples, f"seed={seed} must be in [0, 2**64 - num_samples]; e.g. --seed=1337"),
        (threads < 0, f"threads={threads} must be 0 (automatic) or more"),
        (interactive and sys.stdin is None, "--interactive=True reads prompts from stdin, but stdin is closed; pipe "
         "prompts in, or pass --start=TEXT instead")):
    if broken:  # (story i draws with seed + i, and torch seeds are 64-bit)
        raise ValueError(message)
check_device(device)
weights_dtype = torch_dtype(dtype)
if beam_width > 1 and num_samples > 1:
    print(f"beam search is deterministic: printing 1 story per prompt, not {num_samples}", file=sys.stderr)
    num_samples = 1


def read_prompt(text):
    """The prompt text: --start itself, or the contents of the file named by FILE:path."""
    if not text.startswith('FILE:'):
        return text
    path = text[len('FILE:'):]
    if not path:
        raise ValueError("--start=FILE: needs a file name, like --start=FILE:prompt.txt")
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"prompt file {path}: {e.strerror}; pass an existing text file as --start=FILE:path") from None
    except UnicodeDecodeError:
        raise ValueError(f"prompt file {path} is not UTF-8 text; save it as UTF-8") from None
    text = text.rstrip('\r\n')  # editors end files with a newline; left in, the model would start a fresh line
    if not text.strip():
        print(f"prompt file {path} is empty: telling a fresh story", file=sys.stderr)
        return ''
    return text


# The checkpoint, and the tokenizer it was trained with (recorded inside it, so nothing else must match).
ckpt_path = rundir.find_checkpoint(out_dir, ckpt)
prompt = None if interactive else read_prompt(start)  # a bad FILE: fails now, not after loading
model, checkpoint = GPT.from_checkpoint(ckpt_path, device=device)
enc = tokenizer.from_checkpoint(checkpoint, ckpt_path)
eot = enc.eot_token
# Decoding reads every weight once per token, so cast the weights to dtype once here: autocast would re-cast
# every matrix for every token. (The position tables are cast too; computed in float64, they lose only bits.)
decode.transpose_weights(model.to(weights_dtype))  # each matrix laid out for the one-token step's products
torch.set_num_threads(decode.threads_for(beam_width if beam_width > 1 else 1 if stream else num_samples, threads))
step = decode.compile_step(model) if compile else decode.decode_step  # compiled: the one-token step, fixed shapes
sampling['eos_id'] = eot if stop_at_eot else None

strategy = (f'beam search, width {beam_width}' if beam_width > 1 else 'greedy' if temperature == 0 else
            f'sampling at temperature {temperature}' + (f', top_k {top_k}' if top_k else '') +
            (f', top_p {top_p}' if top_p < 1 else ''))
print(f"{ckpt_path}: iter {checkpoint.get('iter_num', '?')}, {model.num_params() / 1e6:.2f}M params, vocab "
      f"{enc.n_vocab}, block {model.config.block_size}; {strategy}", file=sys.stderr)


def story(new):
    """The text of new tokens, cut before the first <|endoftext|> when stories stop there."""
    if stop_at_eot and eot in new:
        new = new[:new.index(eot)]
    return enc.decode(new)


def tell(text):
    """Print num_samples stories continuing text: streamed token by token, or decoded as one batch."""
    ids = [eot] + enc.encode(text, allowed_special={'<|endoftext|>'})
    if len(ids) > model.config.block_size:
        print(f"the prompt is {len(ids)} tokens; the model sees only the last {model.config.block_size}",
              file=sys.stderr)
    x = torch.tensor([ids], dtype=torch.long, device=device)
    # story i draws from its own generator, seeded seed + i: its draws ignore the other stories'
    generators = [torch.Generator(device=device).manual_seed(seed + i) for i in range(num_samples)]
    if beam_width > 1:
        y = decode.beam_search(model, x, max_new_tokens, beam_width, eos_id=sampling['eos_id'])
        print(text + story(y[0, len(ids):].tolist()), end='\n---------------\n', flush=True)
    elif num_samples > 1 and not stream:
        rows = torch.stack(list(decode.generate(model, x.expand(num_samples, -1), max_new_tokens, generator=generators,
                                                step=step, **sampling)), 1)
        for row in rows.tolist():
            print(text + story(row), end='\n---------------\n', flush=True)
    else:
        for g in generators:
            sys.stdout.write(text)
            sys.stdout.flush()
            # A token may end inside a multi-byte character: decode bytes incrementally, so the
            # character prints whole once its last byte arrives, instead of as two replacement marks.
            utf8 = codecs.getincrementaldecoder('utf-8')(errors='replace')
            for tok in decode.generate(model, x, max_new_tokens, generator=g, step=step, **sampling):
                if stop_at_eot and tok.item() == eot:
                    break
                sys.stdout.write(utf8.decode(enc.decode_single_token_bytes(tok.item())))
                sys.stdout.flush()
            sys.stdout.write(utf8.decode(b'', final=True) + '\n---------------\n')
            sys.stdout.flush()


if not interactive:
    tell(prompt)
else:
    while True:
        if sys.stdin.isatty():
            print('prompt (empty: a fresh story; Ctrl-D: quit)> ', end='', file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:  # EOF
            break
        line = line.rstrip('\r\n')
        tell(line if line.strip() else '')
