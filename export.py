"""
Take a trained model out: write a checkpoint as a Hugging Face transformers directory that
AutoModelForCausalLM.from_pretrained(dir) and AutoTokenizer.from_pretrained(dir) load offline, with no
custom code: the format pipelines, the Hub, lm-eval-harness and the llama.cpp / vLLM converters start from:

    python export.py --out_dir=out --export_dir=hf-model            # best.pt -> hf-model/
    python export.py --out_dir=out --ckpt=last --export_dir=hf-model --verify=False

The directory holds model.safetensors (fp32 weights), config.json, generation_config.json (bos = eos = pad =
<|endoftext|>), and the tokenizer as tokenizer.json + tokenizer_config.json + special_tokens_map.json.

Which class:
- pos='rope', norm='rmsnorm', act='swiglu', norm_pos='pre' (any n_kv_head, tied or not, bias or not: Llama's
  attention_bias / mlp_bias cover ours) -> LlamaForCausalLM. Our fused qkv Linear is cut into q/k/v_proj, and
  our gated MLP's `up` (value half, then gate half) into up_proj (value) and gate_proj (gate). Rotary layout:
  ours pairs dimension i with i + head_dim/2, and so does Llama's rotate_half, so q/k need no permutation
  (the equality check below proves it on every export).
- pos='learned', norm='layernorm', act='gelu', norm_pos='pre', n_kv_head=None -> GPT2LMHeadModel. Its Conv1D
  stores weights as (in, out), the transpose of our Linear; its activation 'gelu' is the exact erf GELU we
  use ('gelu_new', GPT-2's default, is the tanh approximation); a bias-free model gets zero biases.
- Anything else (sinusoidal or no positions, post-norm, relu/silu/geglu, no norm, LayerNorm with RoPE, GQA
  with learned positions, options export.py does not know) is refused in one line naming the option.
  dropout and label_smoothing only shape training, so they never block an export.

Vocabulary: our embedding and lm_head have padded_vocab rows (a multiple of 64) whose extra logits the model
cuts off. The export keeps exactly vocab_size rows, so the padded ids do not exist in it at all.

Tokenizer: tiktoken merges the adjacent pair whose concatenation has the lowest id, and keeps a pre-token that
is itself a token whole. tokenizer.json says the same to the `tokenizers` library: a byte-level BPE whose
merges are every split of every token into two tokens, ordered by the token's id, with ignore_merges=True;
the pre-tokenizer is our GPT-2 regex followed by the byte-level mapping; <|endoftext|> is the one special
token (bos, eos and unk). No token is added to what you encode: like sample.py, put <|endoftext|> before a
prompt, since every training story followed one.

Verification (skip with --verify=False): the written directory is loaded with transformers (when installed)
and its fp32 logits on a few sequences must equal ours within 1e-4, and its tokenizer's ids ours on a sample
text, before any file appears in export_dir; a failed check writes nothing.
"""
import json
import os
import shutil
import tempfile

import torch

import rundir
import tokenizer
from model import GPTConfig

# (Constants here are dicts and sets: configurator.configure would take module-level strs/tuples for settings.)
# What each class can represent, in the order a refusal names it.
NEEDS = {'LlamaForCausalLM': dict(pos='rope', norm='rmsnorm', act='swiglu', norm_pos='pre'),
         'GPT2LMHeadModel': dict(pos='learned', norm='layernorm', act='gelu', norm_pos='pre', n_kv_head=None)}
# GPTConfig fields export.py reads or may ignore; a field outside this set is exportable only at its default
KNOWN_FIELDS = {'vocab_size', 'block_size', 'n_layer', 'n_head', 'n_kv_head', 'n_embd', 'mlp_hidden', 'bias',
                'pos', 'rope_theta', 'norm', 'norm_pos', 'act', 'tie_weights',
                'dropout', 'label_smoothing', 'zero_init'}  # the last three shape training only
EXPORT_FILES = {'config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json',
                'tokenizer_config.json', 'special_tokens_map.json'}


def family(c):
    """'llama' or 'gpt2': the transformers class that can hold GPTConfig c; a one-line ValueError if none can."""
    for f in sorted(set(c.to_dict()) - KNOWN_FIELDS):  # options added to model.py after this file was written
        default = getattr(GPTConfig, f, None)
        if getattr(c, f) != default:
            raise ValueError(f'export: {f}={getattr(c, f)!r} is an option export.py does not know, so it cannot say '
                             f'a standard transformers class represents it; only {f}={default!r} exports')
    cls = {'rope': 'LlamaForCausalLM', 'learned': 'GPT2LMHeadModel'}.get(c.pos)
    for name, want in NEEDS[cls].items() if cls else [('pos', None)]:
        have = None if name == 'n_kv_head' and (c.n_kv_head or c.n_head) == c.n_head else getattr(c, name)  # n_head kv heads: plain
        if have != want:
            needs = '; '.join(f'{k} needs ' + ', '.join(f'{n}={v!r}' for n, v in d.items()) for k, d in NEEDS.items())
            raise ValueError(f'export: {name}={have!r} has no standard transformers class; {needs}')
    return 'llama' if cls == 'LlamaForCausalLM' else 'gpt2'


def hf_config(model, eot_id):
    """config.json of the model (a GPT) as a dict; plain JSON, so writing it needs no transformers."""
    c, fam = model.config, family(model.config)
    common = dict(vocab_size=c.vocab_size, bos_token_id=eot_id, eos_token_id=eot_id, tie_word_embeddings=c.tie_weights,
                  initializer_range=0.02, use_cache=True, torch_dtype='float32')
    if fam == 'llama':
        return dict(architectures=['LlamaForCausalLM'], model_type='llama', hidden_size=c.n_embd,
                    intermediate_size=c.mlp_width, num_hidden_layers=c.n_layer, num_attention_heads=c.n_head,
                    num_key_value_heads=c.n_kv_head or c.n_head, head_dim=c.head_dim, hidden_act='silu',
                    max_position_embeddings=c.block_size, rms_norm_eps=model.norm_f.eps, rope_theta=c.rope_theta,
                    attention_bias=c.bias, mlp_bias=c.bias, attention_dropout=c.dropout, **common)
    return dict(architectures=['GPT2LMHeadModel'], model_type='gpt2', n_embd=c.n_embd, n_inner=c.mlp_width,
                n_layer=c.n_layer, n_head=c.n_head, n_positions=c.block_size, activation_function='gelu',
                layer_norm_epsilon=model.norm_f.eps, resid_pdrop=c.dropout, embd_pdrop=c.dropout,
                attn_pdrop=c.dropout, **common)


def hf_state_dict(model):
    """The model's weights under transformers' names and layouts: {name: fp32 tensor}, each with its own memory
    (safetensors refuses tensors that share it). A tied lm_head is left out: transformers ties it on load."""
    c, fam, V = model.config, family(model.config), model.config.vocab_size
    own = lambda t: t.detach().to(torch.float32).contiguous().clone()
    zeros = lambda n: torch.zeros(n)  # GPT-2 always has biases; ours may not
    sd = {}
    if fam == 'llama':
        sd['model.embed_tokens.weight'] = own(model.wte.weight[:V])  # drop the padding rows
        for i, b in enumerate(model.blocks):
            p, qkv_sizes = f'model.layers.{i}.', [c.n_head * c.head_dim] + [(c.n_kv_head or c.n_head) * c.head_dim] * 2
            for kind in ('weight', 'bias') if c.bias else ('weight',):
                q, k, v = getattr(b.attn.qkv, kind).split(qkv_sizes)  # query heads, key heads, value heads
                value, gate = getattr(b.mlp.up, kind).chunk(2)  # MLP.forward: value * silu(gate)
                for name, t in (('self_attn.q_proj', q), ('self_attn.k_proj', k), ('self_attn.v_proj', v),
                                ('self_attn.o_proj', getattr(b.attn.proj, kind)), ('mlp.up_proj', value),
                                ('mlp.gate_proj', gate), ('mlp.down_proj', getattr(b.mlp.down, kind))):
                    sd[f'{p}{name}.{kind}'] = own(t)
            sd[p + 'input_layernorm.weight'] = own(b.norm1.weight)
            sd[p + 'post_attention_layernorm.weight'] = own(b.norm2.weight)
        sd['model.norm.weight'] = own(model.norm_f.weight)
    else:
        sd['transformer.wte.weight'] = own(model.wte.weight[:V])
        sd['transformer.wpe.weight'] = own(model.wpe.weight)
        for i, b in enumerate(model.blocks):
            p = f'transformer.h.{i}.'
            for ours, theirs in ((b.norm1, 'ln_1'), (b.norm2, 'ln_2')):
                sd[p + theirs + '.weight'] = own(ours.weight)
                sd[p + theirs + '.bias'] = own(ours.bias) if c.bias else zeros(c.n_embd)
            for ours, theirs in ((b.attn.qkv, 'attn.c_attn'), (b.attn.proj, 'attn.c_proj'),
                                 (b.mlp.up, 'mlp.c_fc'), (b.mlp.down, 'mlp.c_proj')):
                sd[p + theirs + '.weight'] = own(ours.weight.t())  # Conv1D: (in, out)
                sd[p + theirs + '.bias'] = own(ours.bias) if c.bias else zeros(ours.out_features)
        sd['transformer.ln_f.weight'] = own(model.norm_f.weight)
        sd['transformer.ln_f.bias'] = own(model.norm_f.bias) if c.bias else zeros(c.n_embd)
    if not c.tie_weights:
        sd['lm_head.weight'] = own(model.lm_head.weight[:V])
    return sd


def hf_tokenizer_json(enc):
    """tokenizer.json text for PreTrainedTokenizerFast that encodes exactly as enc (a tokenizer.py tiktoken
    Encoding: our byte-level BPE or GPT-2's) does with <|endoftext|> allowed."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    to_char = {b: ch for ch, b in tokenizer.gpt2_byte_decoder().items()}  # byte-level BPE spells byte b as one char
    spell = lambda bs: ''.join(to_char[b] for b in bs)
    ranks = enc._mergeable_ranks  # tiktoken has no public accessor for its {bytes: id} table or its regex
    vocab = {spell(t): i for t, i in ranks.items()}
    # tiktoken joins ANY adjacent pair that spells a token, at the token's rank: list every split. (One corner
    # cannot be said: where two overlapping pairs spell the same token, tiktoken joins the left one and
    # `tokenizers` the one listed first. Checked on GPT-2's 684 such triples and real text: no difference.)
    merges = []
    for t, _ in sorted(ranks.items(), key=lambda kv: kv[1]):
        merges += [(spell(t[:k]), spell(t[k:])) for k in range(1, len(t)) if t[:k] in ranks and t[k:] in ranks]
    tok = Tokenizer(models.BPE(vocab, merges, ignore_merges=True))  # ignore_merges: a whole pre-token stays whole
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(enc._pat_str), behavior='isolated'),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(tokenizer.EOT, special=True, normalized=False)])
    if tok.token_to_id(tokenizer.EOT) != enc.eot_token:
        raise ValueError(f'export: {tokenizer.EOT} is id {enc.eot_token} in the checkpoint\'s tokenizer but not '
                         'the id after its last token; the tokenizer state is damaged, re-copy or retrain')
    return tok.to_str()


def write_files(model, enc, d, source=''):
    """Write the export's files into the existing directory d, each complete on disk (rundir.atomic_open)."""
    from safetensors.torch import save
    c, eot, special = model.config, enc.eot_token, {k: tokenizer.EOT for k in ('bos_token', 'eos_token', 'unk_token')}
    if enc.n_vocab > c.vocab_size:
        raise ValueError(f'export: the tokenizer has {enc.n_vocab} tokens but the model only {c.vocab_size}; '
                         'the checkpoint is damaged, re-copy or retrain it')
    files = {
        'config.json': hf_config(model, eot) | {'exported_by': f'tinystories-gpt export.py from {source}'},
        'generation_config.json': dict(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot),
        'tokenizer_config.json': dict(tokenizer_class='PreTrainedTokenizerFast', model_max_length=c.block_size,
                                      model_input_names=['input_ids', 'attention_mask'],  # no token_type_ids
                                      clean_up_tokenization_spaces=False, **special),
        'special_tokens_map.json': special}
    for name, obj in files.items():
        rundir.write_json(os.path.join(d, name), obj)
    rundir.write_text(os.path.join(d, 'tokenizer.json'), hf_tokenizer_json(enc))
    with rundir.atomic_open(os.path.join(d, 'model.safetensors'), 'wb') as f:
        f.write(save(hf_state_dict(model), metadata={'format': 'pt'}))  # transformers wants format 'pt'


@torch.no_grad()
def check_export(model, enc, d, max_diff=1e-4):
    """Load directory d with transformers and compare it with our model (eval mode) and tokenizer: returns the
    largest absolute fp32 logit difference; a ValueError if it exceeds max_diff or the tokenizers disagree.
    Raises ImportError when transformers is not installed."""
    text = ("Once upon a time, Lily's dog ran 123 m in 4.5 s!<|endoftext|>  Two  spaces,\n\n\nnewlines,\ttabs, "
            "café, naïve, 日本語, emoji 🙂🐶, and <|endoftext|> again.   \n")
    import transformers
    transformers.utils.logging.disable_progress_bar()  # one line per export, not a loading bar
    old = int(transformers.__version__.split('.')[0]) < 5  # 4.x spells the dtype argument torch_dtype
    local = dict(local_files_only=True)  # a local directory: never wait on the network
    hf = transformers.AutoModelForCausalLM.from_pretrained(d, **{'torch_dtype' if old else 'dtype': torch.float32},
                                                           attn_implementation='eager', **local).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(d, **local)
    # verbose=False: no warning that the text is longer than block_size, which is fine here
    ours_ids, hf_ids = enc.encode(text, allowed_special='all'), hf_tok(text, verbose=False)['input_ids']
    if hf_ids != ours_ids or hf_tok.decode(hf_ids) != text:
        raise ValueError(f'export: the exported tokenizer disagrees with ours on {text[:30]!r}...: '
                         f'ids {hf_ids[:12]}... vs {ours_ids[:12]}...; please report it')
    c, g = model.config, torch.Generator().manual_seed(0)
    T = c.block_size
    seqs = [torch.tensor([(ours_ids * (T // len(ours_ids) + 1))[:T]]),  # real text, a full block
            torch.randint(0, c.vocab_size, (2, T), generator=g),        # any ids, batched
            torch.tensor([[enc.eot_token]])]                             # one token
    worst = 0.0
    device = next(model.parameters()).device
    for idx in seqs:
        ours = model(idx.to(device), targets=idx.to(device))[0].float().cpu()  # targets: logits at every position
        theirs = hf(input_ids=idx).logits.float()
        if theirs.shape != ours.shape:
            raise ValueError(f'export: transformers gives logits {tuple(theirs.shape)}, ours {tuple(ours.shape)}')
        worst = max(worst, (ours - theirs).abs().max().item())
    if not worst <= max_diff:  # `not <=`: a NaN fails too
        raise ValueError(f'export: transformers\' logits differ from ours by up to {worst:.2e} (> {max_diff:g}) in '
                         'fp32; the conversion is wrong for this model, please report it')
    return worst


def is_export(d):
    """True if d holds only files an earlier export wrote (and its config.json says so)."""
    try:
        with open(os.path.join(d, 'config.json'), encoding='utf-8') as f:
            marked = 'exported_by' in json.load(f)
    except (OSError, ValueError, TypeError):
        return False
    return marked and set(os.listdir(d)) <= EXPORT_FILES


def export(model, enc, export_dir, overwrite=False, verify=True, source=''):
    """Write the model (a GPT in eval mode) and its tokenizer enc to export_dir as a transformers directory.
    Files are written and checked in a temporary directory beside export_dir, then moved in one by one
    (os.replace), so export_dir never holds a half-written file and a failed check leaves it untouched. A
    non-empty export_dir that is not an earlier export is refused unless overwrite (then its other files stay).
    Returns the largest logit difference measured, or None if not checked (verify=False or no transformers)."""
    family(model.config)  # refuse an unexportable model before touching the disk
    if os.path.exists(export_dir):
        if not os.path.isdir(export_dir):
            raise ValueError(f'export: {export_dir} is a file; give --export_dir a new or empty directory')
        if os.listdir(export_dir) and not overwrite and not is_export(export_dir):
            raise ValueError(f'export: {export_dir} is not empty and not an earlier export; pick a new --export_dir, '
                             'or --overwrite=True to write the export files there (other files are kept)')
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(os.path.abspath(export_dir))}.tmp-', dir=parent)
    try:
        write_files(model, enc, tmp, source)
        worst = None
        if verify:
            try:
                worst = check_export(model, enc, tmp)
            except ImportError:
                print('export: transformers is not installed, so the export is not checked (pip install transformers)')
        os.makedirs(export_dir, exist_ok=True)
        for name in EXPORT_FILES:
            os.replace(os.path.join(tmp, name), os.path.join(export_dir, name))
        return worst
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    # -----------------------------------------------------------------------------
    out_dir = 'out'
    ckpt = 'best'           # 'best' | 'last' (out_dir/best.pt, out_dir/last.pt) | a path (looked up in out_dir first)
    export_dir = ''         # the transformers directory to write; '' = out_dir/hf
    verify = True           # load the export with transformers and require its logits to equal ours (<= 1e-4)
    overwrite = False       # write into a non-empty directory that is not an earlier export (its other files stay)
    # -----------------------------------------------------------------------------
    from configurator import configure
    from model import GPT
    configure(globals())  # from here on, a ValueError / OSError ends the script with its one-line message
    path = rundir.find_checkpoint(out_dir, ckpt)
    model, checkpoint = GPT.from_checkpoint(path)  # one-line errors for a damaged file
    if 'tokenizer' not in checkpoint:
        raise ValueError(f"{path} records no tokenizer; it wasn't written by this repo's train.py")
    enc = tokenizer.from_state(checkpoint['tokenizer'])
    export_dir = export_dir or os.path.join(out_dir, 'hf')
    worst = export(model, enc, export_dir, overwrite=overwrite, verify=verify, source=path)
    kind = 'LlamaForCausalLM' if family(model.config) == 'llama' else 'GPT2LMHeadModel'
    checked = f'; max |logit difference| vs ours {worst:.1e}' if worst is not None else ''
    print(f'exported {path} ({model.num_params() / 1e6:.2f}M params, vocab {model.config.vocab_size}) '
          f'as {kind} to {export_dir}{checked}')
