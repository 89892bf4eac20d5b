"""
Tell stories with a trained model:

    python sample.py --out_dir=out --start="Once upon a time" --num_samples=3

Decoding strategies:
    --temperature=0             greedy: always the single most likely next token
    --temperature=0.8           sampling from softmax(logits / temperature); < 1 is safer, > 1 wilder
      --top_k=50                ... only among the 50 most likely tokens
      --top_p=0.9               ... only among the most likely tokens that hold 90% of the probability
                                (nucleus sampling, Holtzman et al. 2019); top_k and top_p combine
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
`beam_search` is importable (report.py and the tests use it).
"""
import codecs
import sys

import torch
import torch.nn.functional as F

import rundir
import tokenizer
from device import DTYPES, check_device
from model import GPT, Window

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
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'bfloat16' if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else 'float32'  # of the weights and activations
compile = torch.cuda.is_available()  # torch.compile the decoding step (CUDA graphs on a GPU); on a CPU its compile
                                     # time outweighs what it saves for a few stories: README's measured table
interactive = False     # read prompts from stdin, one per line, until EOF
stop_at_eot = True      # end a story at <|endoftext|>; False keeps going into the next one
# -----------------------------------------------------------------------------


@torch.no_grad()
def beam_search(model, idx, max_new_tokens, beam_width, eos_id=None, length_penalty=1.0):
    """The most probable continuation of idx (1, T) found by keeping beam_width partial sequences ranked by
    summed log-probability. Finished ones (ending in eos_id) are ranked by sum / length**length_penalty; the
    search stops once beam_width have finished. beam_width=1 is greedy decoding. Returns (1, T + n)."""
    if idx.dim() != 2 or idx.size(0) != 1 or idx.size(1) == 0:
        raise ValueError(f'beam_search takes one prompt of shape (1, T) with T >= 1, got {tuple(idx.shape)}; '
                         'search prompts one at a time')
    if beam_width < 1 or max_new_tokens < 0:
        raise ValueError(f'beam_width={beam_width} must be at least 1 and max_new_tokens={max_new_tokens} at least 0; '
                         'use beam_width=1 for greedy decoding')
    W, T, dev = beam_width, idx.size(1), idx.device
    window = Window(model, idx.expand(W, T))  # every beam starts as the prompt
    scores = torch.full((W,), float('-inf'), device=dev)
    scores[0] = 0.0  # all beams start as the same prompt: grow only the first at step one
    finished, stopped = [], False
    for step in range(max_new_tokens):
        logp = F.log_softmax(window.logits().float(), dim=-1)  # (W, V)
        V = logp.size(-1)
        top, flat = (scores[:, None] + logp).view(-1).topk(min(2 * W, W * V))  # 2W: at most W end in eos
        live = []  # (parent row, token, score) of the next beams, best first
        for rank, (s, i) in enumerate(zip(top.tolist(), flat.tolist())):
            if s == float('-inf') or len(live) == W:
                break
            if eos_id is not None and i % V == eos_id:
                if rank < W:  # an ending only counts if it would have made the beam
                    ended = torch.cat((window.seq[i // V, T:], torch.tensor([eos_id], device=dev)))
                    finished.append((s / (step + 1) ** length_penalty, ended))
                continue
            live.append((i // V, i % V, s))
        if len(finished) >= W or not live:
            stopped = True
            break
        live += [(live[0][0], live[0][1], float('-inf'))] * (W - len(live))  # tiny vocab: pad with dead beams
        # each beam continues from its parent's sequence and cached keys and values
        window.push(torch.tensor([t for _, t, _ in live], device=dev), rows=torch.tensor([r for r, _, _ in live], device=dev))
        scores = torch.tensor([s for _, _, s in live], device=dev)
    if not stopped or not finished:  # out of steps: the live beams compete with the finished ones
        n = window.seq.size(1) - T
        finished += [(s / max(n, 1) ** length_penalty, window.seq[b, T:]) for b, s in enumerate(scores.tolist())
                     if s > float('-inf')]
    best = max(finished, key=lambda f: f[0])[1]
    return torch.cat((idx[0], best))[None]


if __name__ == '__main__':
    from configurator import configure
    config = configure(globals())

    # Refuse settings that can't mean what the user wants, before the slow checkpoint load.
    if temperature < 0:
        raise SystemExit(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise SystemExit(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0 < top_p <= 1:
        raise SystemExit(f"top_p must be in (0, 1] (1 = off), got {top_p}")
    if beam_width < 1 or num_samples < 1 or max_new_tokens < 1:
        raise SystemExit("beam_width, num_samples and max_new_tokens must be >= 1; "
                         f"got {beam_width}, {num_samples}, {max_new_tokens}")
    if beam_width > 1 and (top_k or top_p < 1):
        raise SystemExit("beam search doesn't sample, so top_k/top_p do nothing; drop them or set --beam_width=1")
    if beam_width == 1 and temperature == 0 and (top_k or top_p < 1):
        raise SystemExit("greedy decoding (temperature=0) doesn't sample, so top_k/top_p do nothing; "
                         "drop them or set --temperature above 0")
    if interactive and start:
        raise SystemExit("--start and --interactive=True both given; in interactive mode type the prompts on stdin")
    if start and not start.strip():
        raise SystemExit("the prompt is only whitespace; pass some text, or --start='' for a fresh story")
    if dtype not in DTYPES:
        raise SystemExit(f"dtype must be 'float32', 'bfloat16' or 'float16', got {dtype!r}")
    if not 0 <= seed <= 2**64 - num_samples:  # story i draws with seed + i, and torch seeds are 64-bit
        raise SystemExit(f"seed={seed} must be in [0, 2**64 - num_samples]; e.g. --seed=1337")
    if interactive and sys.stdin is None:  # started with stdin closed (<&-)
        raise SystemExit("--interactive=True reads prompts from stdin, but stdin is closed; pipe prompts in, "
                         "or pass --start=TEXT instead")
    device_type = check_device(device)  # one-line exit for an unusable device
    if beam_width > 1 and num_samples > 1:
        print(f"beam search is deterministic: printing 1 story per prompt, not {num_samples}", file=sys.stderr)
        num_samples = 1

    def read_prompt(text):
        """The prompt text: --start itself, or the contents of the file named by FILE:path."""
        if not text.startswith('FILE:'):
            return text
        path = text[len('FILE:'):]
        if not path:
            raise SystemExit("--start=FILE: needs a file name, like --start=FILE:prompt.txt")
        try:
            with open(path, encoding='utf-8') as f:
                text = f.read()
        except OSError as e:
            raise SystemExit(f"prompt file {path}: {e.strerror}; pass an existing text file as --start=FILE:path")
        except UnicodeDecodeError:
            raise SystemExit(f"prompt file {path} is not UTF-8 text; save it as UTF-8")
        # Editors end files with a newline; left in, the model would continue on a fresh line.
        text = text.rstrip('\r\n')
        if not text.strip():
            print(f"prompt file {path} is empty: telling a fresh story", file=sys.stderr)
            return ''
        return text

    # The checkpoint, and the tokenizer it was trained with (recorded inside it, so nothing else must match).
    ckpt_path = rundir.find_checkpoint(out_dir, ckpt)  # a one-line error when there is none
    prompt = None if interactive else read_prompt(start)  # a bad FILE: fails now, not after loading
    torch.manual_seed(seed)
    model, checkpoint = GPT.from_checkpoint(ckpt_path, device=device)  # weights_only load, one-line errors
    if 'tokenizer' not in checkpoint:
        raise SystemExit(f"{ckpt_path} records no tokenizer; it wasn't written by this repo's train.py")
    enc = tokenizer.from_state(checkpoint['tokenizer'])
    eot = enc.eot_token
    block_size = checkpoint['model_args']['block_size']
    # Decoding reads every weight once per token, so cast the weights to dtype once here: autocast would re-cast
    # every matrix for every token. (The position tables are cast too; computed in float64, they lose only bits.)
    model.eval().to({'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype])
    if compile:  # generation runs the one-token step, not model.forward: compile that, over its fixed shapes
        model.compile_decoding()
    sampling = dict(temperature=temperature, top_k=top_k or None, top_p=top_p if top_p < 1 else None,
                    eos_id=eot if stop_at_eot else None)

    if beam_width > 1:
        strategy = f'beam search, width {beam_width}'
    elif temperature == 0:
        strategy = 'greedy'
    else:
        strategy = f'sampling at temperature {temperature}' + (f', top_k {top_k}' if top_k else '') + \
                   (f', top_p {top_p}' if top_p < 1 else '')
    print(f"{ckpt_path}: iter {checkpoint.get('iter_num', '?')}, {model.num_params() / 1e6:.2f}M "
          f"params, vocab {enc.n_vocab}, block {block_size}; {strategy}", file=sys.stderr)

    def story(new):
        """The text of new tokens, cut before the first <|endoftext|> when stories stop there."""
        if stop_at_eot and eot in new:
            new = new[:new.index(eot)]
        return enc.decode(new)

    def tell(text):
        """Print num_samples stories continuing text: streamed token by token, or decoded as one batch."""
        ids = [eot] + enc.encode(text, allowed_special={'<|endoftext|>'})
        if len(ids) > block_size:
            print(f"the prompt is {len(ids)} tokens; the model sees only the last {block_size}", file=sys.stderr)
        x = torch.tensor([ids], dtype=torch.long, device=device)
        # story i draws from its own generator, seeded seed + i: its draws ignore the other stories'
        generators = [torch.Generator(device=device).manual_seed(seed + i) for i in range(num_samples)]
        if beam_width > 1:
            y = beam_search(model, x, max_new_tokens, beam_width, eos_id=sampling['eos_id'])
            print(text + story(y[0, len(ids):].tolist()), end='\n---------------\n', flush=True)
        elif num_samples > 1 and not stream:
            y = model.generate(x.expand(num_samples, -1), max_new_tokens, generator=generators, **sampling)
            for row in y[:, len(ids):].tolist():
                print(text + story(row), end='\n---------------\n', flush=True)
        else:
            for g in generators:
                sys.stdout.write(text)
                sys.stdout.flush()
                # A token may end inside a multi-byte character: decode bytes incrementally, so the
                # character prints whole once its last byte arrives, instead of as two replacement marks.
                utf8 = codecs.getincrementaldecoder('utf-8')(errors='replace')
                for tok in model.generate_stream(x, max_new_tokens, generator=g, **sampling):
                    t = tok.item()
                    if stop_at_eot and t == eot:
                        break
                    sys.stdout.write(utf8.decode(enc.decode_single_token_bytes(t)))
                    sys.stdout.flush()
                sys.stdout.write(utf8.decode(b'', final=True) + '\n---------------\n')
                sys.stdout.flush()

    try:
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
    except KeyboardInterrupt:  # Ctrl-C is how people stop a long story; no traceback for it
        print(file=sys.stderr)
        raise SystemExit(130)
