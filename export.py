"""
Take a trained model out: write a checkpoint as a Hugging Face transformers directory that
AutoModelForCausalLM.from_pretrained(dir) and AutoTokenizer.from_pretrained(dir) load offline, with no
custom code, and, if asked, a GGUF file in it that llama.cpp runs:

    python export.py --out_dir=out --export_dir=hf-model            # best.pt -> hf-model/
    python export.py --out_dir=out --export_dir=hf-model --gguf=q8_0   # and hf-model/model-q8_0.gguf
    python export.py --out_dir=out --ckpt=last --export_dir=hf-model --verify=False

The directory holds model.safetensors (fp32 weights), config.json, generation_config.json (bos = eos = pad =
<|endoftext|>), and the tokenizer as tokenizer.json + tokenizer_config.json + special_tokens_map.json.

Which class (CLASSES below; all pre-norm, any n_kv_head, tied or not):
- RoPE + RMSNorm: LlamaForCausalLM (SwiGLU), Qwen3ForCausalLM (SwiGLU + QK-norm), ArceeForCausalLM (squared
  ReLU, hidden_act='relu2') or ApertusForCausalLM (squared ReLU + QK-norm). All four lay weights out as Llama:
  our fused qkv Linear is cut into q/k/v_proj, our gated MLP's `up` (value half, then gate half) into up_proj
  (value) and gate_proj (gate); a plain MLP is up_proj -> act -> down_proj. Rotary layout: ours pairs dimension
  i with i + head_dim/2, as their rotate_half does. QK-norm: Qwen3 and Apertus, like us, RMS-normalise each
  head's q and k before the rotation, with rms_norm_eps (1e-6, as all our RMSNorms). rope_scaling is set to
  plain rotary: Apertus's default is llama3-style scaling. Qwen3's and Apertus's MLPs have no biases.
- pos='learned', norm='layernorm', act='gelu', n_kv_head=None -> GPT2LMHeadModel. Its Conv1D stores weights
  as (in, out), the transpose of our Linear; its activation 'gelu' is the exact erf GELU we use ('gelu_new',
  GPT-2's default, is the tanh approximation); a bias-free model gets zero biases.
- Anything else (sinusoidal or no positions, post-norm, relu/silu/geglu, no norm, LayerNorm with RoPE, GQA with
  learned positions, unknown options) is refused in one line naming the options; training-only ones never are.

Vocabulary: the export keeps exactly vocab_size rows of our embedding and lm_head (padded_vocab rows, a
multiple of 64, whose extra logits the model cuts off), so the padded ids do not exist in it at all.

Tokenizer: tiktoken merges the adjacent pair whose concatenation has the lowest id, and keeps a pre-token that
is itself a token whole. tokenizer.json says the same to the `tokenizers` library: a byte-level BPE whose
merges are every split of every token into two tokens, ordered by the token's id, with ignore_merges=True,
after our GPT-2 regex and the byte-level mapping; <|endoftext|> is the one special token (bos, eos and unk).
No token is added to what you encode: like sample.py, start a prompt with <|endoftext|>, as every story did.

GGUF (--gguf=f32|f16|q8_0: model-<type>.gguf in the directory, by the `gguf` package): the same weights, renamed
by gguf's map of transformers names, for llama.cpp's architecture of the class (CLASSES). llama.cpp's llama and
arcee rotate adjacent pairs (2i, 2i+1), so q/k rows are permuted within each head as its convert_hf_to_gguf.py
permutes a Llama's (qwen3 and apertus rotate halves, as we do); its apertus MLP is xIELU, set to its case
relu(x)^2; its gpt2 has the tanh-approximated GELU, so a GPT-2-style model runs close to ours, not equal. The
tokenizer is tokenizer.json's tokens and merges as model 'gpt2', pre-tokenizer 'gpt-2' (our regex), no BOS
added. f16 and q8_0 store the matrices so (q8_0 keeps f16 for rows not a multiple of 32); norms stay f32.

Verification (skip with --verify=False): the written directory is loaded with transformers (when installed)
and its fp32 logits on a few sequences must equal ours within 1e-4, and its tokenizer's ids ours on a sample
text, before any file appears in export_dir. --llama_cpp=True runs the GGUF in llama.cpp (`make gguf-check`).
"""
import itertools
import json
import math
import os
import shutil
import tempfile
import time

import torch

import decode
import rundir
import tokenizer
from model import GPTConfig

# What each class can represent, in the order a refusal names them: class -> (model_type, llama.cpp's
# architecture, the GPTConfig values it needs).
ROPE = dict(pos='rope', norm='rmsnorm', norm_pos='pre')
CLASSES = {'LlamaForCausalLM': ('llama', 'llama', dict(ROPE, act='swiglu', qk_norm=False)),
           'Qwen3ForCausalLM': ('qwen3', 'qwen3', dict(ROPE, act='swiglu', qk_norm=True, bias=False)),
           'ArceeForCausalLM': ('arcee', 'arcee', dict(ROPE, act='relu2', qk_norm=False)),
           'ApertusForCausalLM': ('apertus', 'apertus', dict(ROPE, act='relu2', qk_norm=True, bias=False)),
           'GPT2LMHeadModel': ('gpt2', 'gpt2', dict(pos='learned', norm='layernorm', norm_pos='pre', act='gelu',
                                                    qk_norm=False, n_kv_head=None))}
GGUF_NEEDS = {'arcee': dict(bias=False)}  # where llama.cpp's architecture lacks what its class has: arcee's biases
GGUF_TYPES = {'f32': 'ALL_F32', 'f16': 'MOSTLY_F16', 'q8_0': 'MOSTLY_Q8_0'}  # --gguf -> gguf.LlamaFileType
# GPTConfig fields export.py reads or may ignore; a field outside this set is exportable only at its default
KNOWN_FIELDS = {'vocab_size', 'block_size', 'n_layer', 'n_head', 'n_kv_head', 'n_embd', 'mlp_hidden', 'bias',
                'pos', 'rope_theta', 'norm', 'norm_pos', 'act', 'tie_weights', 'qk_norm',
                'dropout', 'label_smoothing', 'zero_init'}  # the last three shape training only
EXPORT_FILES = {'config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json',
                'special_tokens_map.json', rundir.LOCK} | {f'model-{t}.gguf' for t in GGUF_TYPES}


def hf_class(c):
    """The transformers class (a key of CLASSES) that holds GPTConfig c; a one-line ValueError if none can."""
    for f in sorted(set(c.to_dict()) - KNOWN_FIELDS):  # options added to model.py after this file was written
        default = getattr(GPTConfig, f, None)
        if getattr(c, f) != default:
            raise ValueError(f'export: {f}={getattr(c, f)!r} is an option export.py does not know, so it cannot say '
                             f'a standard transformers class represents it; only {f}={default!r} exports')
    have = c.to_dict() | {'n_kv_head': None if (c.n_kv_head or c.n_head) == c.n_head else c.n_kv_head}  # plain
    misses = {cls: {k for k, v in needs.items() if have[k] != v} for cls, (_, _, needs) in CLASSES.items()}
    fewest = min(map(len, misses.values()))
    if fewest:  # name what keeps the closest classes out
        closest = [m for m in misses.values() if len(m) == fewest]
        named = ', '.join(f'{k}={v!r}' for k, v in have.items() if any(k in m for m in closest))
        needs = '; '.join(f'{k} needs ' + ', '.join(f'{n}={v!r}' for n, v in d.items())
                          for k, (_, _, d) in CLASSES.items())
        raise ValueError(f'export: {named} has no standard transformers class; {needs}')
    return next(cls for cls, m in misses.items() if not m)


def llama_style(model, cls):
    """Llama, Qwen3, Arcee and Apertus: their config.json fields and {name: tensor} in Llama's layout."""
    c, V = model.config, model.config.vocab_size
    config = dict(hidden_size=c.n_embd, intermediate_size=c.mlp_width, num_hidden_layers=c.n_layer,
                  num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head or c.n_head, head_dim=c.head_dim,
                  hidden_act='silu' if c.act == 'swiglu' else c.act, max_position_embeddings=c.block_size,
                  rms_norm_eps=model.norm_f.eps, rope_theta=c.rope_theta, rope_scaling={'rope_type': 'default'},
                  attention_bias=c.bias, mlp_bias=c.bias, attention_dropout=c.dropout)
    norms = ('attention_layernorm', 'feedforward_layernorm') if cls == 'ApertusForCausalLM' else \
        ('input_layernorm', 'post_attention_layernorm')
    sd = {'model.embed_tokens.weight': model.wte.weight[:V]}  # drop the padding rows
    for i, b in enumerate(model.blocks):
        p, qkv_sizes = f'model.layers.{i}.', [c.n_head * c.head_dim] + [(c.n_kv_head or c.n_head) * c.head_dim] * 2
        for kind in ('weight', 'bias') if c.bias else ('weight',):
            q, k, v = getattr(b.attn.qkv, kind).split(qkv_sizes)  # query heads, key heads, value heads
            up = getattr(b.mlp.up, kind)
            # SwiGLU's `up` is the value half, then the gate half: value * silu(gate)
            mlp = zip(('up_proj', 'gate_proj'), up.chunk(2)) if c.act == 'swiglu' else [('up_proj', up)]
            for name, t in (('self_attn.q_proj', q), ('self_attn.k_proj', k), ('self_attn.v_proj', v),
                            ('self_attn.o_proj', getattr(b.attn.proj, kind)),
                            ('mlp.down_proj', getattr(b.mlp.down, kind)), *((f'mlp.{n}', t) for n, t in mlp)):
                sd[f'{p}{name}.{kind}'] = t
        for name in ('q_norm', 'k_norm') if c.qk_norm else ():
            sd[f'{p}self_attn.{name}.weight'] = getattr(b.attn, name).weight
        sd[p + norms[0] + '.weight'], sd[p + norms[1] + '.weight'] = b.norm1.weight, b.norm2.weight
    sd['model.norm.weight'] = model.norm_f.weight
    if not c.tie_weights:
        sd['lm_head.weight'] = model.lm_head.weight[:V]
    return config, sd


def gpt2_style(model, cls):
    """GPT-2: its config.json fields and {name: tensor}."""
    c, V = model.config, model.config.vocab_size
    config = dict(n_embd=c.n_embd, n_inner=c.mlp_width, n_layer=c.n_layer, n_head=c.n_head, n_positions=c.block_size,
                  activation_function='gelu', layer_norm_epsilon=model.norm_f.eps, resid_pdrop=c.dropout,
                  embd_pdrop=c.dropout, attn_pdrop=c.dropout)
    bias = lambda m, n: m.bias if c.bias else torch.zeros(n)  # GPT-2 always has biases; ours may not
    sd = {'transformer.wte.weight': model.wte.weight[:V], 'transformer.wpe.weight': model.wpe.weight}
    for i, b in enumerate(model.blocks):
        p = f'transformer.h.{i}.'
        for ours, theirs in ((b.norm1, 'ln_1'), (b.norm2, 'ln_2')):
            sd[p + theirs + '.weight'], sd[p + theirs + '.bias'] = ours.weight, bias(ours, c.n_embd)
        for ours, theirs in ((b.attn.qkv, 'attn.c_attn'), (b.attn.proj, 'attn.c_proj'),
                             (b.mlp.up, 'mlp.c_fc'), (b.mlp.down, 'mlp.c_proj')):
            sd[p + theirs + '.weight'] = ours.weight.t()  # Conv1D: (in, out)
            sd[p + theirs + '.bias'] = bias(ours, ours.out_features)
    sd['transformer.ln_f.weight'], sd['transformer.ln_f.bias'] = model.norm_f.weight, bias(model.norm_f, c.n_embd)
    if not c.tie_weights:
        sd['lm_head.weight'] = model.lm_head.weight[:V]
    return config, sd


def hf_model(model, eot_id):
    """The model (a GPT) for transformers: (config.json as a dict, {name: fp32 tensor}), each tensor with its own
    memory (safetensors refuses tensors that share it). A tied lm_head is left out: transformers ties it."""
    cls, c = hf_class(model.config), model.config
    config, sd = (gpt2_style if cls == 'GPT2LMHeadModel' else llama_style)(model, cls)
    config = dict(architectures=[cls], model_type=CLASSES[cls][0], vocab_size=c.vocab_size, bos_token_id=eot_id,
                  eos_token_id=eot_id, tie_word_embeddings=c.tie_weights, initializer_range=0.02, use_cache=True,
                  torch_dtype='float32', **config)
    return config, {k: t.detach().to(torch.float32).contiguous().clone() for k, t in sd.items()}


def bpe_tables(enc):
    """enc (a tokenizer.py tiktoken Encoding: our byte-level BPE or GPT-2's) as byte-level BPE tables: the
    tokens spelled as the byte-level alphabet's chars, in id order, and the merges, as (left, right) pairs."""
    to_char = {b: ch for ch, b in tokenizer.gpt2_byte_decoder().items()}  # byte-level BPE spells byte b as one char
    spell = lambda bs: ''.join(to_char[b] for b in bs)
    ranks = sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1])  # tiktoken has no public accessor for it
    if [i for _, i in ranks] != list(range(len(ranks))) or enc.eot_token != len(ranks):
        raise ValueError(f'export: {tokenizer.EOT} is id {enc.eot_token} in the checkpoint\'s tokenizer but not '
                         'the id after its last token; the tokenizer state is damaged, re-copy or retrain')
    # tiktoken joins ANY adjacent pair that spells a token, at the token's rank: list every split. (One corner
    # cannot be said: where two overlapping pairs spell the same token, tiktoken joins the left one and
    # `tokenizers` the one listed first. Checked on GPT-2's 684 such triples and real text: no difference.)
    merges, known = [], enc._mergeable_ranks
    for t, _ in ranks:
        merges += [(spell(t[:k]), spell(t[k:])) for k in range(1, len(t)) if t[:k] in known and t[k:] in known]
    return [spell(t) for t, _ in ranks], merges


def hf_tokenizer_json(enc):
    """tokenizer.json text for PreTrainedTokenizerFast that encodes exactly as enc does with <|endoftext|>
    allowed."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    tokens, merges = bpe_tables(enc)
    # ignore_merges: a pre-token that is itself a token stays whole
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(enc._pat_str), behavior='isolated'),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(tokenizer.EOT, special=True, normalized=False)])
    return tok.to_str()


def gguf_arch(c, enc):
    """llama.cpp's architecture for GPTConfig c with tokenizer enc; a one-line ValueError if it has none."""
    cls = hf_class(c)
    arch = CLASSES[cls][1]
    for name, want in GGUF_NEEDS.get(arch, {}).items():
        if getattr(c, name) != want:
            raise ValueError(f'export: --gguf: {name}={getattr(c, name)!r} has no llama.cpp architecture: its {arch} '
                             f'({cls}) needs {name}={want!r}; llama.cpp runs ' + ', '.join(
                                 f'{k} as {a}' for k, (_, a, _) in CLASSES.items()))
    if enc._pat_str != tokenizer.GPT2_PATTERN:
        raise ValueError('export: --gguf: the tokenizer splits text with a regex other than GPT-2\'s, the only one '
                         'llama.cpp is told (pre-tokenizer gpt-2); export without --gguf')
    return arch


def write_gguf(model, enc, path, qtype='f32'):
    """Write the model (a GPT) and its tokenizer enc to path as one GGUF file (see the module's docstring)."""
    import gguf
    arch, c, eot = gguf_arch(model.config, enc), model.config, enc.eot_token
    (tokens, merges), T = bpe_tables(enc), gguf.TokenType
    kv = dict(context_length=c.block_size, embedding_length=c.n_embd, block_count=c.n_layer,
              feed_forward_length=c.mlp_width, head_count=c.n_head, head_count_kv=c.n_kv_head or c.n_head,
              file_type=gguf.LlamaFileType[GGUF_TYPES[qtype]], tokenizer_model='gpt2', tokenizer_pre='gpt-2',
              token_list=tokens + [tokenizer.EOT] + [f'[PAD{i}]' for i in range(len(tokens) + 1, c.vocab_size)],
              token_types=[T.NORMAL] * len(tokens) + [T.CONTROL] + [T.UNUSED] * (c.vocab_size - len(tokens) - 1),
              token_merges=[f'{a} {b}' for a, b in merges], bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
              add_bos_token=False)  # as with transformers: the prompt carries its <|endoftext|>
    kv |= dict(layer_norm_rms_eps=model.norm_f.eps, rope_freq_base=c.rope_theta, rope_dimension_count=c.head_dim) \
        if c.pos == 'rope' else dict(layer_norm_eps=model.norm_f.eps)
    if arch == 'apertus':  # xIELU(x) = a_p x^2 + beta x if x > 0 else a_n (expm1(min(x, eps)) - x) + beta x, with
        # a_p = softplus(alpha_p), a_n = beta + softplus(alpha_n): a_p = 1 and a_n = beta = 0 make it relu(x)^2
        kv |= dict(xielu_alpha_p=[math.log(math.e - 1)] * c.n_layer, xielu_alpha_n=[-1000.0] * c.n_layer,
                   xielu_beta=[0.0] * c.n_layer, xielu_eps=[0.0] * c.n_layer)  # softplus(-1000) = 0 in fp32
    w = gguf.GGUFWriter(path, arch)
    for key, value in kv.items():
        getattr(w, 'add_' + key)(value)
    sd = hf_model(model, eot)[1]
    if arch == 'apertus' and c.tie_weights:  # llama.cpp's apertus requires output.weight
        sd['lm_head.weight'] = sd['model.embed_tokens.weight']
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], c.n_layer)
    for name, t in sd.items():
        if arch in ('llama', 'arcee') and ('.q_proj.' in name or '.k_proj.' in name):  # halves -> adjacent pairs
            heads = c.n_head if '.q_proj.' in name else c.n_kv_head or c.n_head
            t = t.reshape(heads, 2, t.shape[0] // heads // 2, *t.shape[1:]).transpose(1, 2).reshape(t.shape)
        if arch == 'gpt2' and name.endswith(('c_attn.weight', 'c_proj.weight', 'c_fc.weight')):
            t = t.t()  # Conv1D's (in, out) back to (out, in)
        kind = gguf.GGMLQuantizationType[qtype.upper()] if t.ndim == 2 else gguf.GGMLQuantizationType.F32
        if kind == gguf.GGMLQuantizationType.Q8_0 and t.shape[-1] % 32:  # Q8_0 packs blocks of 32 in a row
            kind = gguf.GGMLQuantizationType.F16
        w.add_tensor(names.get_name(name, try_suffixes=('.weight', '.bias')),
                     gguf.quants.quantize(t.contiguous().numpy(), kind), raw_dtype=kind)
    for step in (w.write_header_to_file, w.write_kv_data_to_file, w.write_tensors_to_file, w.close):
        step()


def write_files(model, enc, d, source=''):
    """Write the export's files into the existing directory d, each complete on disk (rundir.atomic_open)."""
    from safetensors.torch import save
    c, eot, special = model.config, enc.eot_token, {k: tokenizer.EOT for k in ('bos_token', 'eos_token', 'unk_token')}
    if enc.n_vocab > c.vocab_size:
        raise ValueError(f'export: the tokenizer has {enc.n_vocab} tokens but the model only {c.vocab_size}; '
                         'the checkpoint is damaged, re-copy or retrain it')
    config, sd = hf_model(model, eot)
    files = {
        'config.json': config | {'exported_by': f'tinystories-gpt export.py from {source}'},
        'generation_config.json': dict(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot),
        'tokenizer_config.json': dict(tokenizer_class='PreTrainedTokenizerFast', model_max_length=c.block_size,
                                      model_input_names=['input_ids', 'attention_mask'],  # no token_type_ids
                                      clean_up_tokenization_spaces=False, **special),
        'special_tokens_map.json': special}
    for name, obj in files.items():
        rundir.write_json(os.path.join(d, name), obj)
    rundir.write_text(os.path.join(d, 'tokenizer.json'), hf_tokenizer_json(enc))
    with rundir.atomic_open(os.path.join(d, 'model.safetensors'), 'wb') as f:
        f.write(save(sd, metadata={'format': 'pt'}))  # transformers wants format 'pt'
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


def export(model, enc, export_dir, overwrite=False, verify=True, source='', gguf=''):
    """Write the model (a GPT in eval mode) and its tokenizer enc to export_dir as a transformers directory, with
    gguf ('f32' | 'f16' | 'q8_0') model-<gguf>.gguf in it. Written and checked in a temporary directory beside
    export_dir, the files are moved in (os.replace) under export_dir's lock (rundir.lock): export_dir never holds
    a half-written file or two exports' files (a second export at once is refused; export files this one does
    not write, another GGUF type, are removed), and a failed check leaves it untouched. A non-empty export_dir
    that is not an earlier export is refused unless overwrite (then its other files stay). Returns the largest
    logit difference measured, or None if not checked (verify=False or no transformers)."""
    hf_class(model.config)  # refuse an unexportable model before touching the disk
    if gguf:  # and one llama.cpp cannot run
        if gguf not in GGUF_TYPES:
            raise ValueError(f'export: --gguf={gguf!r} is not a GGUF type export.py writes; use one of '
                             + ', '.join(GGUF_TYPES))
        gguf_arch(model.config, enc)
    if os.path.exists(export_dir):
        if not os.path.isdir(export_dir):
            raise ValueError(f'export: {export_dir} is a file; give --export_dir a new or empty directory')
        if set(os.listdir(export_dir)) - {rundir.LOCK} and not overwrite and not is_export(export_dir):
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
        if gguf:
            write_gguf(model, enc, os.path.join(tmp, f'model-{gguf}.gguf'), gguf)
        held, written = rundir.lock(export_dir), os.listdir(tmp)  # BlockingIOError while another export holds it
        try:
            for name in written:
                os.replace(os.path.join(tmp, name), os.path.join(export_dir, name))
            for name in (EXPORT_FILES - set(written) - {rundir.LOCK}) & set(os.listdir(export_dir)):
                os.remove(os.path.join(export_dir, name))  # an earlier export's GGUF: another model's
        finally:
            if held:
                held.close()
        return worst
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@torch.no_grad()
def check_llama_cpp(model, enc, path, prompt='Once upon a time', n=50, threads=2):
    """Run the GGUF at path in llama.cpp (llama-cpp-python) beside our model (eval mode, CPU), both greedy for n
    tokens after <|endoftext|> + prompt on `threads` threads. Returns (how many of the n tokens are equal before
    the first difference, the largest |logit difference| on the tokens llama.cpp read, our tokens/s, llama.cpp's
    tokens/s). A ValueError if llama.cpp's tokenizer gives other ids than ours; an ImportError without
    llama-cpp-python. Its key/value cache is f32 here: its default, f16, moves the logits by ~5e-3."""
    from llama_cpp import Llama
    text = tokenizer.EOT + prompt
    ids = enc.encode(text, allowed_special='all')
    llm = Llama(path, n_ctx=model.config.block_size, n_threads=threads, n_threads_batch=threads, type_k=0, type_v=0,
                logits_all=True, verbose=False)  # type 0: GGML_TYPE_F32
    theirs = llm.tokenize(text.encode(), add_bos=False, special=True)
    if theirs != ids:
        raise ValueError(f'export: llama.cpp tokenizes {text!r} as {theirs}, we as {ids}; please report it')
    torch.set_num_threads(threads)
    list(decode.generate(model, torch.tensor([ids]), 2, temperature=0))  # warm both up: first calls allocate
    llm.eval(ids)
    llm.reset()
    t0 = time.perf_counter()
    ours = torch.cat(list(decode.generate(model, torch.tensor([ids]), n, temperature=0))).tolist()
    t1 = time.perf_counter()
    theirs = list(itertools.islice(llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0), n))  # endless
    t2 = time.perf_counter()
    seq = torch.tensor([ids + theirs[:-1]])  # what llama.cpp read, its logits in llm.scores
    diff = (model(seq, targets=seq)[0][0] - torch.from_numpy(llm.scores[:seq.size(1)])).abs().max().item()
    llm.close()  # now, not at interpreter exit, where llama-cpp-python's finaliser fails noisily
    same = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), n)
    return same, diff, n / (t1 - t0), n / (t2 - t1)


if __name__ == '__main__':
    # -----------------------------------------------------------------------------
    out_dir = 'out'
    ckpt = 'best'           # 'best' | 'last' (out_dir/best.pt, out_dir/last.pt) | a path (looked up in out_dir first)
    export_dir = ''         # the transformers directory to write; '' = out_dir/hf
    verify = True           # load the export with transformers and require its logits to equal ours (<= 1e-4)
    overwrite = False       # write into a non-empty directory that is not an earlier export (its other files stay)
    gguf = ''               # also write export_dir/model-<gguf>.gguf for llama.cpp: 'f32' | 'f16' | 'q8_0'
    llama_cpp = False       # run it (f32 unless --gguf) in llama.cpp (pip install llama-cpp-python) beside ours
    threads = 2             # CPU threads of both, for --llama_cpp's tokens/s
    # -----------------------------------------------------------------------------
    from configurator import configure
    from model import GPT
    configure(globals())  # from here on, a ValueError / OSError ends the script with its one-line message
    gguf = gguf or ('f32' if llama_cpp else '')
    path = rundir.find_checkpoint(out_dir, ckpt)
    model, checkpoint = GPT.from_checkpoint(path)  # one-line errors for a damaged file
    enc = tokenizer.from_checkpoint(checkpoint, path)
    export_dir = export_dir or os.path.join(out_dir, 'hf')
    worst = export(model, enc, export_dir, overwrite=overwrite, verify=verify, source=path, gguf=gguf)
    cls, gguf_path = hf_class(model.config), os.path.join(export_dir, f'model-{gguf}.gguf')
    checked = f'; max |logit difference| vs ours {worst:.1e}' if worst is not None else ''
    print(f'exported {path} ({model.num_params() / 1e6:.2f}M params, vocab {model.config.vocab_size}) as {cls} to '
          f'{export_dir}{checked}' + (f'; {gguf_path} for llama.cpp\'s {CLASSES[cls][1]}' if gguf else ''))
    if llama_cpp:
        same, diff, ours, theirs = check_llama_cpp(model, enc, gguf_path, threads=threads)
        print(f'llama.cpp: same tokenizer ids; max |logit difference| vs ours {diff:.1e}; greedy tokens equal to '
              f'ours {same}/50; tokens/s with threads={threads}: llama.cpp {theirs:.0f}, ours {ours:.0f}')
        if gguf == 'f32' and same < 50:
            raise ValueError(f'export: llama.cpp\'s greedy tokens differ from ours at token {same} in fp32; '
                             'the GGUF conversion is wrong for this model, please report it')
