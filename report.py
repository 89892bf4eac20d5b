"""
Write up a training run as a course report would: the model's equations (exactly the components this
checkpoint uses, with its sizes), the data and training setup, exact headline numbers next to an
untrained baseline, a decoding study, and a discussion whose every statement is a rule over measured numbers.

$ python report.py --out_dir=out-tinystories-cpu

Everything is written under out_dir/report/:
  report.md, report.pdf             the report (LaTeX math in the .md; in the .pdf rendered by matplotlib's mathtext,
                                    so no TeX install is needed); the PDF's text comes first, one page per figure after
  decoding.json                     the decoding study: every story and the table's numbers
  training_curves.png               train/val loss against iteration and tokens seen, val perplexity, lr
  attention/layer{L}.png            one heatmap per head for the first prompt, axes labelled with its tokens
  weights/histograms.png            the values of every weight matrix, one panel per layer
  weights/spectral_norms.png        largest singular value of every weight matrix, by layer
  weights/spectral_norms.{json,csv} the same numbers (plus Frobenius norm, mean, std)

The decoding study's metrics are functions here (distinct_n, repeated_share), importable and tested, because this
report is their only user; they measure stories already generated and need nothing from sample.py.
"""
import csv
import io
import json
import math
import os
import re
import time

import matplotlib
matplotlib.use('Agg')  # files only: servers and CI have no display
import matplotlib.pyplot as plt
import numpy as np
import torch

import data
import rundir
import tokenizer
from device import check_device
from eval import evaluate, token_logprobs
from model import GPT, GPTConfig
from decode import beam_search, generate

# -----------------------------------------------------------------------------
out_dir = 'out'
ckpt = 'best'           # 'best' | 'last' (out_dir/best.pt, out_dir/last.pt) | a path (looked up in out_dir first)
data_dir = ''           # '' = the data_dir the checkpoint was trained on (for the exact evaluation and the data setup)
prompts = ('Once upon a time there was a little girl named Lily. She', 'Tom and his dog went to the park. They',
           'The sun was hot, so')  # the decoding study's fixed prompts; the first also labels the attention heatmaps
samples = 12            # stories per decoding strategy for the study's table, >= 1, the prompts taken in turn
max_new_tokens = 120    # per story, >= 1; a story also ends at <|endoftext|>
seed = 1337             # the samplers' generator: same checkpoint and seed, same stories and table
device = 'cpu'
eval_stride = 0         # tokens scored per window over the whole val split (see eval.py); 0 = block_size // 2
eval_batch_size = 16
reuse_eval_json = True  # use out_dir/eval.json instead when `python eval.py --baseline=True` scored this checkpoint
# -----------------------------------------------------------------------------
# The decoding strategies of the study (Holtzman et al. 2020 compare the same family): (name, generate() arguments)
STRATEGIES = (('greedy', {'temperature': 0.0}), ('beam 4', {'beam_width': 4}),
              ('temperature 0.7', {'temperature': 0.7}), ('temperature 1.0', {'temperature': 1.0}),
              ('top-k 50', {'temperature': 1.0, 'top_k': 50}), ('top-p 0.9', {'temperature': 1.0, 'top_p': 0.9}))
REP_N = 4  # repetition is measured on 4-grams, as Welleck et al. 2019 (seq-rep-4)


def distinct_n(stories, n):
    """Distinct n-grams over all n-grams of the stories, pooled (Li et al. 2016): 1.0 when no n-gram occurs twice
    anywhere, low when stories repeat themselves or each other. n-grams never cross stories. None if there are none."""
    grams = [tuple(s[i:i + n]) for s in stories for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def repeated_share(story, n=REP_N):
    """Share of a story's n-grams that repeat an n-gram earlier in the same story (seq-rep-n, Welleck et al. 2019):
    0 = none, 0.5 = half of them, as in a loop. None for a story shorter than n tokens."""
    grams = [tuple(story[i:i + n]) for i in range(len(story) - n + 1)]
    return (len(grams) - len(set(grams))) / len(grams) if grams else None


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def model_math(c):
    """The equations of exactly the components GPTConfig c uses, its sizes substituted: a list of (component,
    sentence, [LaTeX]). The LaTeX keeps to what both MathJax (report.md) and mathtext (report.pdf) render."""
    d, h, kv, dh, V, T, L, f = (c.n_embd, c.n_head, c.n_kv_head or c.n_head, c.head_dim, c.vocab_size, c.block_size,
                                c.n_layer, c.mlp_width)
    R = lambda a, b: rf'\in \mathbb{{R}}^{{{a} \times {b}}}'  # noqa: E731 (a matrix's shape)
    b = lambda s: f' + b_{{{s}}}' if c.bias else ''  # noqa: E731 (a bias vector, when the model has them)
    N = {'layernorm': r'\mathrm{LN}', 'rmsnorm': r'\mathrm{RMSNorm}'}.get(c.norm)
    x0 = {'learned': r'E_{w_t} + P_t', 'sinusoidal': rf'\sqrt{{{d}}}\,E_{{w_t}} + P_t'}.get(c.pos, r'E_{w_t}')
    out = [('embedding', f'Token embedding: the token w_t at position t = 0..{T - 1} selects row w_t of E.',
            [rf'x^{{(0)}}_t = {x0},\quad E {R(V, d)}'])]
    if c.pos == 'learned':
        out.append(('pos:learned', 'Learned positions (Radford et al. 2019): one trained row of P per position.',
                    [f'P {R(T, d)}']))
    elif c.pos == 'sinusoidal':
        out.append(('pos:sinusoidal', 'Sinusoidal positions (Vaswani et al. 2017), fixed:',
                    [rf'P_{{t,2i}} = \sin(t / 10000^{{2i/{d}}}),\quad P_{{t,2i+1}} = \cos(t / 10000^{{2i/{d}}})']))
    elif c.pos == 'rope':
        m = dh // 2
        out.append(('pos:rope', f'Rotary positions (RoPE, Su et al. 2021): in every head, query channels i and i + {m} '
                    "are rotated by an angle proportional to the position t, and so are the keys'; a score then "
                    'depends only on the distance between the two tokens:',
                    [rf'\tilde{{q}}_{{t,i}} = q_{{t,i}} \cos t\theta_i - q_{{t,i+{m}}} \sin t\theta_i,\quad '
                     rf'\tilde{{q}}_{{t,i+{m}}} = q_{{t,i}} \sin t\theta_i + q_{{t,i+{m}}} \cos t\theta_i',
                     rf'\theta_i = {c.rope_theta:g}^{{-2i/{dh}}},\quad i = 0, \dots, {m - 1}']))
    else:
        out.append(('pos:none', 'No position encoding (NoPE, Kazemnejad et al. 2023): order is known only through the '
                    'causal mask.', []))
    if c.zero_init:
        out.append(('zero_init', 'Zero-initialised output projections (as in modded-nanogpt): W^O and W_2 of every block '
                    'start at 0, so a fresh block adds nothing to the residual stream.', []))
    if c.dropout > 0:
        out.append(('dropout', f'Dropout with p = {c.dropout:g} on the embeddings, the attention weights and each '
                    'residual branch, in training only.', []))
    if N is None:
        blk = ('unnormalised', 'without normalisation', r"u = x + \mathrm{Attn}(x),\quad x' = u + \mathrm{MLP}(u)")
    elif c.norm_pos == 'pre':
        blk = ('pre', 'pre-norm (Radford et al. 2019): each sub-layer reads a normalised copy of the residual stream '
               'and adds its output to it',
               rf"u = x + \mathrm{{Attn}}({N}_1(x)),\quad x' = u + \mathrm{{MLP}}({N}_2(u))")
    else:
        blk = ('post', 'post-norm (Vaswani et al. 2017): each residual sum is normalised',
               rf"u = {N}_1(x + \mathrm{{Attn}}(x)),\quad x' = {N}_2(u + \mathrm{{MLP}}(u))")
    out.append((f'block:{blk[0]}', f"Each of the L = {L} blocks maps x = x^(l-1) to x' = x^(l), {blk[1]}:", [blk[2]]))
    avg = rf'\frac{{1}}{{{d}}}\sum_{{i=1}}^{{{d}}}'  # the mean over the d channels
    if c.norm == 'layernorm':
        out.append(('norm:layernorm', f'LayerNorm over the d = {d} channels, with a trained gain g'
                    + (' and bias b:' if c.bias else ':'),
                    [rf'\mathrm{{LN}}(x) = g \odot \frac{{x - \mu}}{{\sqrt{{\sigma^2 + 10^{{-5}}}}}}'
                     + (' + b' if c.bias else '') + rf',\quad \mu = {avg} x_i,\quad \sigma^2 = {avg} (x_i - \mu)^2']))
    elif c.norm == 'rmsnorm':
        out.append(('norm:rmsnorm', f'RMSNorm (Zhang & Sennrich 2019) over the d = {d} channels, with a gain g:',
                    [rf'\mathrm{{RMSNorm}}(x) = g \odot x \,/\, \sqrt{{{avg} x_i^2 + 10^{{-6}}}}']))
    q, k = (r'\tilde{Q}', r'\tilde{K}') if c.pos == 'rope' else ('Q', 'K')
    j = 'i' if kv == h else 'g(i)'
    if kv == h:
        qkv = (rf'Q_i = X W^Q_i{b("Q_i")},\quad K_i = X W^K_i{b("K_i")},\quad V_i = X W^V_i{b("V_i")},\quad '
               rf'W^Q_i, W^K_i, W^V_i {R(d, dh)},\quad i = 1, \dots, {h}')
    else:
        qkv = (rf'Q_i = X W^Q_i{b("Q_i")},\ i = 1, \dots, {h},\quad K_j = X W^K_j{b("K_j")},\ '
               rf'V_j = X W^V_j{b("V_j")},\ j = 1, \dots, {kv},\quad W^Q_i, W^K_j, W^V_j {R(d, dh)}')
    out.append(('attention', 'Causal multi-head self-attention: X holds the hidden states of a sequence, one row per '
                f'token; h = {h} heads of d_h = {dh} channels; the mask M hides the future:',
                [qkv, rf'\mathrm{{head}}_i = \mathrm{{softmax}}\left(\frac{{{q}_i {k}_{{{j}}}^\top}}{{\sqrt{{{dh}}}}} '
                 rf'+ M\right) V_{{{j}}},\quad M_{{ts}} = 0 \text{{ if }} s \leq t, \text{{ else }} -\infty',
                 rf'\mathrm{{Attn}}(X) = [\mathrm{{head}}_1, \dots, \mathrm{{head}}_{{{h}}}]\, W^O{b("O")},\quad '
                 rf'W^O {R(d, d)}']))
    if kv < h:
        out.append(('gqa', f'Grouped-query attention (Ainslie et al. 2023): the {h} query heads share {kv} key/value '
                    f'head{"s" if kv > 1 else ""}, {h // kv} query heads per group, so the key/value cache is '
                    f'{h // kv}x smaller:', [rf'g(i) = \lceil i \cdot {kv} / {h} \rceil']))
    if c.qk_norm:
        out.append(('qk_norm', 'QK-norm (Henry et al. 2020): each head\'s query and key vectors are RMS-normalised, '
                    f'with trained gains, before {"the rotation and " if c.pos == "rope" else ""}the scores, so no '
                    f'score exceeds sqrt({dh}) times the gains:',
                    [rf'q \leftarrow g^Q \odot q \,/\, '
                     rf'\sqrt{{\frac{{1}}{{{dh}}}\sum_{{i=1}}^{{{dh}}} q_i^2 + 10^{{-6}}}},'
                     r'\quad k \text{ likewise with } g^K']))
    name = {'gelu': 'GELU', 'geglu': 'GELU', 'relu': 'ReLU', 'relu2': 'ReLU2', 'silu': 'SiLU', 'swiglu': 'SiLU'}[c.act]
    phi, defn = {'GELU': (r'\mathrm{GELU}', r'\mathrm{GELU}(z) = z\,\Phi(z),\ \Phi \text{ the standard normal CDF}'),
                 'ReLU': (r'\mathrm{ReLU}', r'\mathrm{ReLU}(z) = \max(0, z)'),
                 'ReLU2': (r'\mathrm{ReLU}^2',
                           r'\mathrm{ReLU}^2(z) = \max(0, z)^2 \text{ (squared ReLU, So et al. 2021)}'),
                 'SiLU': (r'\mathrm{SiLU}', r'\mathrm{SiLU}(z) = z\,\sigma(z) = z / (1 + e^{-z})')}[name]
    if c.act in ('swiglu', 'geglu'):
        out.append((f'mlp:{c.act}', f'The MLP, gated ({"SwiGLU" if c.act == "swiglu" else "GeGLU"}, Shazeer 2020), '
                    f'{f} hidden channels:',
                    [rf'\mathrm{{MLP}}(x) = \left(x W_1{b("1")} \odot {phi}(x W_3{b("3")})\right) '
                     rf'W_2{b("2")},\quad W_1, W_3 {R(d, f)},\ W_2 {R(f, d)}', defn]))
    else:
        out.append((f'mlp:{c.act}', f'The MLP, {f} hidden channels:',
                    [rf'\mathrm{{MLP}}(x) = {phi}(x W_1{b("1")})\, W_2{b("2")},\quad W_1 {R(d, f)},\ '
                     rf'W_2 {R(f, d)}', defn]))
    final = N and c.norm_pos == 'pre'  # post-norm blocks already end normalised
    w_out = r'E^\top' if c.tie_weights else rf'W_{{out}},\quad W_{{out}} {R(d, V)}'
    out.append(('output', f'Output: {"a final norm, then " if final else ""}logits over the V = {V} tokens, and the '
                'next-token distribution:',
                [rf'z_t = {rf"{N}_f(x^{{({L})}}_t)" if final else rf"x^{{({L})}}_t"}\, {w_out}',
                 r'p_\theta(w_{t+1} = v \mid w_{\leq t}) = \mathrm{softmax}(z_t)_v']))
    if c.logit_softcap:
        out.append(('softcap', 'Logit soft-capping (Gemma Team 2024): the logits pass through a scaled tanh, '
                    'smooth and '
                    f'kept inside (-{c.logit_softcap:g}, {c.logit_softcap:g}):',
                    [rf'z_t \leftarrow {c.logit_softcap:g} \tanh(z_t / {c.logit_softcap:g})']))
    if c.tie_weights:
        out.append(('tying', 'Weight tying (Press & Wolf 2017): the output matrix is the embedding E, transposed.', []))
    nll, e = r'\log p_\theta(w_{t+1} \mid w_{\leq t})', c.label_smoothing
    mean_t = rf'-\frac{{1}}{{{T}}}\sum_{{t=0}}^{{{T - 1}}}'  # the mean over a sequence's positions
    if e > 0:
        out.append(('loss:label_smoothing', 'Training loss: cross-entropy against the next token smoothed towards '
                    f'uniform by epsilon = {e:g} (Vaswani et al. 2017), averaged over the positions and the batch; '
                    'evaluation uses plain cross-entropy:',
                    [rf'\mathcal{{L}} = {mean_t} \left[{1 - e:g}\,{nll} + \frac{{{e:g}}}{{{V}}} \sum_{{v=1}}^{{{V}}} '
                     r'\log p_\theta(v \mid w_{\leq t})\right]']))
    else:
        out.append(('loss', 'Training loss: cross-entropy of the next token, averaged over positions and batch:',
                    [rf'\mathcal{{L}} = {mean_t} {nll}']))
    return out


def layer_of(name):
    """'blocks.3.attn.qkv.weight' -> (3, 'attn.qkv'); a parameter outside the blocks -> (None, 'wte')."""
    short = name.removesuffix('.weight')
    m = re.search(r'(?:^|\.)(\d+)\.', short)  # the first numeric component is the block's index
    return (None, short) if m is None else (int(m.group(1)), short[m.end():])


def printable(s):
    """Control characters (an undertrained model emits them) have no glyph in any font: show U+FFFD instead."""
    return ''.join(c if c.isprintable() or c in '\n\t' else '\ufffd' for c in s)


def token_label(enc, i):
    """One token as an axis label: decoded on its own, with spaces and newlines made visible."""
    if i == enc.eot_token:
        return '<eot>'
    s = printable(enc.decode([i]).replace(' ', '\u2423').replace('\n', '\u21b5'))
    return s if len(s) <= 14 else s[:13] + '\u2026'


def fmt(x, spec):
    return '-' if x is None else format(x, spec)


if __name__ == '__main__':
    from fpdf import FPDF
    from matplotlib import mathtext
    from PIL import Image
    from configurator import configure
    config = configure(globals())
    t_start = time.time()
    # Refuse settings that can't mean what the user wants before the slow part.
    if samples < 1 or max_new_tokens < 1:
        raise SystemExit(f"need samples >= 1 and max_new_tokens >= 1; got {samples}, {max_new_tokens}")
    if not isinstance(prompts, tuple) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise SystemExit(f"prompts={prompts!r} must be a tuple of non-empty strings, "
                         "e.g. --prompts=\"('Once upon a time',)\"")
    if eval_stride < 0 or eval_batch_size < 1:
        raise SystemExit(f"need eval_stride >= 0 and eval_batch_size >= 1; got {eval_stride}, {eval_batch_size}")
    check_device(device)  # a one-line error for an unusable device

    # ---------------------------------------------------------------- inputs
    if not os.path.isdir(out_dir):
        raise SystemExit(f"out_dir {out_dir} does not exist; pass --out_dir=<the directory train.py wrote>")
    metrics_path = os.path.join(out_dir, 'metrics.jsonl')
    if not os.path.isfile(metrics_path):
        raise SystemExit(f"no metrics log at {metrics_path}; pass the out_dir of a train.py run")
    train_log, eval_log = [], []  # each in order of iteration
    for rec in rundir.read_metrics(metrics_path):
        log = {'train': train_log, 'eval': eval_log}.get(rec['kind'])
        while log and log[-1]['iter'] >= rec['iter']:  # a restart from an earlier checkpoint: the later records win
            log.pop()
        if log is not None:
            log.append(rec)
    if not train_log and not eval_log:
        raise SystemExit(f"{metrics_path} holds no records; train first (train.py logs to it)")
    ckpt_path = rundir.find_checkpoint(out_dir, ckpt)
    model, ck = GPT.from_checkpoint(ckpt_path, device=device)
    if 'tokenizer' not in ck:
        raise SystemExit(f"{ckpt_path} holds no tokenizer state, so its token ids can't be read; "
                         "use a checkpoint written by train.py")
    enc = tokenizer.from_state(ck['tokenizer'])
    eot, c, tc, iter_num = enc.eot_token, model.config, ck.get('config', {}), ck.get('iter_num', 0)
    report_dir = os.path.join(out_dir, 'report')
    for sub in ('attention', 'weights'):
        os.makedirs(os.path.join(report_dir, sub), exist_ok=True)
    print(f"loaded {ckpt_path} (iter {iter_num}, {model.num_params() / 1e6:.2f}M parameters); writing {report_dir}")
    figures = []  # (figure, path relative to report_dir, caption) in report order

    # ---------------------------------------------------------------- training curves
    fig, ax = plt.subplots(2, 2, figsize=(11, 7.5))
    (a_it, a_tok), (a_ppl, a_lr) = ax
    for recs, key, style, label in ((train_log, 'loss', dict(alpha=0.45, lw=1), 'train (batch)'),
                                    (eval_log, 'train_loss', dict(marker='o', ms=3), 'train (eval)'),
                                    (eval_log, 'val_loss', dict(marker='o', ms=3), 'val (eval)')):
        pts = [(r['iter'], r.get('tokens', 0), r[key]) for r in recs if r.get(key) is not None]
        if pts:
            it, tok, y = zip(*pts)
            a_it.plot(it, y, label=label, **style)
            # log axis for tokens (the scaling-law view); the first eval at 0 tokens has no place on it
            keep = [(t, v) for t, v in zip(tok, y) if t > 0]
            if keep:
                a_tok.plot(*zip(*keep), label=label, **style)
    a_it.set(xlabel='iteration', ylabel='loss (nats/token)', title='loss vs iteration')
    a_tok.set(xlabel='tokens seen', ylabel='loss (nats/token)', title='loss vs tokens seen', xscale='log')
    pts = [(r['iter'], r['val_ppl']) for r in eval_log if r.get('val_ppl') is not None]
    if pts:
        a_ppl.plot(*zip(*pts), marker='o', ms=3, color='C2')
    a_ppl.set(xlabel='iteration', ylabel='perplexity', title='validation perplexity', yscale='log')
    pts = [(r['iter'], r['lr']) for r in train_log if r.get('lr') is not None]
    if pts:
        a_lr.plot(*zip(*pts), color='C3')
    a_lr.set(xlabel='iteration', ylabel='learning rate', title='learning rate (at logged iterations)')
    for a in ax.flat:
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    fig.suptitle(f'{out_dir}: training curves')
    fig.tight_layout()
    figures.append((fig, 'training_curves.png', 'Training curves: loss against iteration and tokens seen, '
                    'validation perplexity, learning rate.'))

    # ---------------------------------------------------------------- attention heatmaps
    # The model saw <|endoftext|> before every story in training, so every prompt starts with it too.
    prompt_ids = [[eot] + enc.encode(p, allowed_special={'<|endoftext|>'}) for p in prompts]
    ids = prompt_ids[0][:c.block_size]
    with torch.no_grad():
        maps = model.attention_maps(torch.tensor([ids], device=device))  # per layer (1, n_head, T, T)
    labels = [token_label(enc, i) for i in ids]
    # Panels grow with the prompt up to a point; past it, label every step-th token so labels stay legible.
    T = len(ids)
    panel = min(8.0, max(3.6, 0.2 * T))
    fs = min(9.0, 0.65 * panel * 72 / T)
    step = max(1, math.ceil(4.5 / fs))
    fs = max(fs, 4.5)
    cmap = plt.get_cmap('viridis').with_extremes(bad='white')
    for layer, att in enumerate(maps):
        att = att[0].float().cpu().numpy()
        n_head = att.shape[0]
        nr = math.ceil(n_head / 4)  # at most 4 panels a row
        nc = math.ceil(n_head / nr)
        fig, axs = plt.subplots(nr, nc, figsize=(panel * nc + 1.2, panel * nr + 0.8), squeeze=False,
                                layout='constrained')
        for hd, a in enumerate(axs.flat):
            if hd >= n_head:
                a.axis('off')
                continue
            # blank out the future (the causal mask), so 'cannot attend' differs from 'chose not to'
            im = a.imshow(np.ma.masked_where(np.triu(np.ones((T, T), bool), 1), att[hd]), cmap=cmap, vmin=0.0, vmax=1.0)
            a.set_xticks(range(0, T, step), labels[::step], rotation=90, fontsize=fs)
            a.set_yticks(range(0, T, step), labels[::step], fontsize=fs)
            a.set_title(f'head {hd}', fontsize=10)
        fig.colorbar(im, ax=axs, shrink=0.6, label='attention weight')
        fig.suptitle(f'layer {layer}: how much each query token (row) attends to each token so far (column)')
        figures.append((fig, f'attention/layer{layer}.png',
                        f'Attention of layer {layer} on the first prompt, one panel per head.'))

    # ---------------------------------------------------------------- weight statistics
    # named_parameters lists a tied matrix once (under its first name): one row per distinct matrix.
    rows, groups = [], {}  # groups: layer (None = outside the blocks) -> [(short name, values)]
    for name, p in model.named_parameters():
        layer, short = layer_of(name)
        if p.ndim != 2:
            continue  # norms' gains and biases are vectors, not matrices
        W = p.detach().float()
        rows.append({'name': name, 'layer': layer, 'short': short, 'shape': list(W.shape),
                     'spectral_norm': torch.linalg.matrix_norm(W, 2).item(),
                     'frobenius_norm': torch.linalg.matrix_norm(W, 'fro').item(),
                     'mean': W.mean().item(), 'std': W.std().item()})
        groups.setdefault(layer, []).append((short, W.flatten().cpu().numpy()))
    wpath = os.path.join(report_dir, 'weights', 'spectral_norms')
    rundir.write_json(wpath + '.json', {'checkpoint': ckpt_path, 'iter': iter_num, 'matrices': rows})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator='\n')
    writer.writeheader()
    writer.writerows({**r, 'shape': 'x'.join(map(str, r['shape']))} for r in rows)
    rundir.write_text(wpath + '.csv', buf.getvalue())

    order = sorted(groups, key=lambda k: -1 if k is None else k)
    nc = min(3, len(order))
    nr = math.ceil(len(order) / nc)
    fig, axs = plt.subplots(nr, nc, figsize=(4.6 * nc, 3.4 * nr), squeeze=False)
    for a, layer in zip(axs.flat, order):
        vals = groups[layer]
        lo, hi = np.percentile(np.concatenate([v for _, v in vals]), [0.1, 99.9])
        for short, v in vals:
            a.hist(np.clip(v, lo, hi), bins=80, range=(lo, hi), density=True, histtype='step', label=short)
        a.set_title('outside the blocks' if layer is None else f'layer {layer}', fontsize=10)
        a.set_yscale('log')
        a.set_xlabel('weight value', fontsize=8)
        a.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
        a.legend(fontsize=6)
        a.grid(alpha=0.3)
    for a in axs.flat[len(order):]:
        a.axis('off')
    fig.suptitle('weight values per matrix (density, log scale; clipped to the 0.1-99.9 percentiles)')
    fig.tight_layout()
    figures.append((fig, 'weights/histograms.png', 'Weight-value histograms of every matrix, one panel per layer.'))

    in_blocks = [r for r in rows if r['layer'] is not None]
    outside = [r for r in rows if r['layer'] is None]
    fig, axs = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={'width_ratios': [3, 1]})
    for short in dict.fromkeys(r['short'] for r in in_blocks):
        pts = [(r['layer'], r['spectral_norm']) for r in in_blocks if r['short'] == short]
        axs[0].plot(*zip(*pts), marker='o', label=short)
    axs[0].set(xlabel='layer', ylabel='spectral norm (largest singular value)', title='matrices in the blocks')
    axs[0].set_xticks(sorted({r['layer'] for r in in_blocks}))
    if in_blocks:
        axs[0].legend(fontsize=7)
    axs[1].bar([r['short'] for r in outside], [r['spectral_norm'] for r in outside], color='C7')
    axs[1].set(title='outside the blocks')
    axs[1].tick_params(axis='x', rotation=45, labelsize=7)
    for a in axs:
        a.grid(alpha=0.3)
    fig.suptitle('spectral norm of every weight matrix')
    fig.tight_layout()
    figures.append((fig, 'weights/spectral_norms.png', 'Spectral norm of every weight matrix, by layer '
                    '(numbers in weights/spectral_norms.json and .csv).'))
    for fig, rel, _ in figures:
        with rundir.atomic_open(os.path.join(report_dir, rel), 'wb') as f:
            fig.savefig(f, format='png', dpi=150)
        plt.close(fig)
    print(f"wrote {len(figures)} figures and the spectral norms of {len(rows)} matrices")

    # ---------------------------------------------------------------- the data, and the exact evaluation
    ddir = data_dir or tc.get('data_dir', '')
    readable = os.path.isfile(os.path.join(ddir, 'meta.json'))
    if data_dir and not readable:
        raise SystemExit(f"no meta.json in {data_dir}; pass --data_dir=<a directory made by prepare.py>")
    meta = data.read_meta(ddir) if readable else ck.get('meta')  # the checkpoint keeps a copy of meta.json
    if readable and tokenizer.state_from_dir(ddir) != ck['tokenizer']:
        raise SystemExit(f"{ddir} was tokenized differently from the data {ckpt_path} was trained on; "
                         "pass --data_dir=<data prepared with the same tokenizer>")
    # eval.py's whole-split numbers are reused when they are for this very checkpoint (same file and iteration, written
    # after it) and include the baseline; otherwise both models are scored here, over the whole val split too.
    results, eval_note, prev = {}, '', None
    eval_json = os.path.join(out_dir, 'eval.json')
    if reuse_eval_json and os.path.isfile(eval_json):
        try:
            with open(eval_json) as f:
                prev = json.load(f)
        except ValueError:
            print(f"ignoring {eval_json}: not valid JSON")
    if (prev and prev.get('baseline') and prev.get('split') == 'val' and prev.get('iter_num') == iter_num
            and os.path.isfile(str(prev.get('checkpoint'))) and os.path.samefile(prev['checkpoint'], ckpt_path)
            and os.path.getmtime(eval_json) >= os.path.getmtime(ckpt_path)):
        results = {'trained': prev, 'untrained': prev['baseline']}
        eval_note = f"eval.py scored the whole val split ({eval_json})"
    elif readable:
        val = np.memmap(os.path.join(ddir, 'val.bin'), dtype=np.dtype(meta['dtype']), mode='r')
        stride = eval_stride or max(1, c.block_size // 2)
        if not 1 <= stride <= c.block_size:
            raise SystemExit(f"eval_stride must be in 1..{c.block_size} (block_size), or 0 for half of it; "
                             f"got {stride}")
        torch.manual_seed(0)  # eval.py's baseline seed, so both scripts show the same untrained model
        untrained = GPT(GPTConfig.from_dict(ck['model_args'])).to(device)
        for key, m in (('trained', model), ('untrained', untrained)):
            results[key] = evaluate(m, val, c.block_size, stride, eval_batch_size, device,
                                    n_bytes=meta['splits']['val']['bytes'], progress=True)
        eval_note = 'report.py scored the whole val split'
    else:
        print(f"skipping the exact evaluation: no readable data in {ddir!r}; pass --data_dir to run it")
    if results:
        r = results['trained']
        eval_note += f": {r['tokens']:,} predictions, windows of {r['block_size']} tokens every {r['stride']}"
        print(f"val loss {r['loss']:.4f}, untrained {results['untrained']['loss']:.4f}: {eval_note}")

    # ---------------------------------------------------------------- decoding study
    # Story i of a strategy continues prompt i % len(prompts). A prompt's stories are drawn in one batch from a
    # generator seeded with seed + the prompt's index. Greedy and beam search are deterministic: they decode each
    # prompt once and that story stands for all of its draws.
    study, stories = {}, {}  # strategy -> table row; strategy -> [(prompt index, new token ids, a final eot included)]
    for name, kw in STRATEGIES:
        stories[name] = []
        for p, ids in enumerate(prompt_ids):
            n = len(range(p, samples, len(prompts)))  # this prompt's share of the samples
            x = torch.tensor([ids[-c.block_size:]], device=device)
            if n == 0:
                continue
            if 'beam_width' in kw:
                out = beam_search(model, x, max_new_tokens, kw['beam_width'], eos_id=eot)
            else:
                g = torch.Generator(device=device).manual_seed(seed + p)
                rows = x.expand(1 if kw['temperature'] == 0 else n, -1)
                out = torch.cat([rows, torch.stack(list(generate(model, rows, max_new_tokens, eos_id=eot, generator=g,
                                                                 **kw)), 1)], 1)
            for new in (out[:, x.size(1):].tolist() * n)[:n]:
                stories[name].append((p, new[:new.index(eot) + 1] if eot in new else new))
        texts = [new[:-1] if new[-1] == eot else new for _, new in stories[name]]  # the story itself, without the eot
        logp = {(p, new): token_logprobs(model, prompt_ids[p] + list(new))[-len(new):].sum().item()
                for p, new in {(p, tuple(new)) for p, new in stories[name]}}  # once per distinct story
        study[name] = {'stories': len(texts), 'mean_tokens': mean([len(t) for t in texts]),
                       **{f'distinct_{k}': distinct_n(texts, k) for k in (1, 2, 3)},
                       f'repeated_{REP_N}grams': mean([repeated_share(t) for t in texts]),
                       'logp_per_token': sum(logp[p, tuple(new)] for p, new in stories[name])
                       / sum(len(new) for _, new in stories[name]),
                       'ended_with_eot': mean([float(new[-1] == eot) for _, new in stories[name]])}
    rundir.write_json(os.path.join(report_dir, 'decoding.json'), {
        'checkpoint': ckpt_path, 'iter': iter_num, 'seed': seed, 'prompts': prompts, 'max_new_tokens': max_new_tokens,
        'table': study, 'stories': {k: [{'prompt': p, 'tokens': new, 'text': enc.decode(new)} for p, new in v]
                                    for k, v in stories.items()}})
    print(f"decoding study: {len(STRATEGIES)} strategies x {samples} stories of up to {max_new_tokens} tokens")

    # ---------------------------------------------------------------- the report as blocks: (kind, *content)
    V = c.vocab_size
    doc = [('h1', f'Training report: {os.path.basename(os.path.abspath(out_dir))}'),
           ('p', f'Checkpoint {ckpt_path} at iteration {iter_num}; written by report.py on '
                 f'{time.strftime("%Y-%m-%d %H:%M")}.'),
           ('h2', '1. Model'),
           ('p', f'A decoder-only transformer with {model.num_params():,} parameters ({V * c.n_embd:,} of them in the '
                 f'token embedding{", which is also the output matrix" if c.tie_weights else ""}): L = {c.n_layer} '
                 f'blocks, d = {c.n_embd} channels, h = {c.n_head} heads, a context of T = {c.block_size} tokens and a '
                 f"vocabulary of V = {V}. The equations are generated from the checkpoint's configuration: they show "
                 'exactly the components this model uses.')]
    for _, text, eqs in model_math(c):
        doc += [('p', text)] + [('eq', e) for e in eqs]

    doc.append(('h2', '2. Setup'))
    if meta:  # the data, from meta.json
        args, sp = meta.get('args') or {}, meta['splits']
        names = lambda s: ', '.join(os.path.basename(x.rstrip('/')) for x in str(s).split(','))  # noqa: E731
        val_from = names(args['val_source']) if args.get('val_source') else f"{args.get('val_fraction')} of the stories"
        bpe = "GPT-2's byte-level BPE" if meta['tokenizer'] == 'gpt2' else 'a byte-level BPE trained on this data'
        doc += [('p', f"Data: {names(meta.get('source'))}; validation: {val_from}. Tokenizer: {bpe}, "
                      f"{meta['vocab_size']:,} tokens."),
                ('table', ['split', 'stories', 'tokens', 'bytes', 'bytes/token'],
                 [[s, f"{sp[s]['stories']:,}", f"{sp[s]['tokens']:,}", f"{sp[s]['bytes']:,}",
                   f"{sp[s]['bytes'] / max(1, sp[s]['tokens']):.2f}"] for s in ('train', 'val')])]
    # the training, from the checkpoint's config and metrics.jsonl
    per_step = tc.get('batch_size', 0) * tc.get('gradient_accumulation_steps', 0) * tc.get('block_size', 0)
    seen, done = iter_num * per_step, [r for r in train_log if r['iter'] <= iter_num]
    # seconds of training, evaluation excluded: train.py's 'time' where it logs it, else the sum of its step timings
    secs = done[-1]['time'] if done and 'time' in done[-1] else \
        sum(r.get('ms', 0) / 1000 * (r['iter'] - (done[i - 1]['iter'] if i else 0)) for i, r in enumerate(done))
    sched = tc.get('lr_schedule', 'cosine')
    decay_end = (f"over a time budget of {tc['time_budget']:g} s of training" if tc.get('time_budget') else
                 f"at step {tc.get('lr_decay_iters') or tc.get('max_iters')}")
    sched = f"linear warmup over {tc.get('warmup_iters')} steps to {tc.get('learning_rate'):g}, then " + {
        'cosine': f"cosine decay to {tc.get('min_lr'):g} {decay_end}",
        'vaswani': 'decay as 1/sqrt(step) (Vaswani et al. 2017)', 'constant': 'constant'}.get(sched, sched)
    opt = tc.get('optimizer', 'adamw')  # checkpoints older than the setting all trained with AdamW
    adamw = f"AdamW, betas ({tc.get('beta1')}, {tc.get('beta2')}), weight decay {tc.get('weight_decay')} on matrices"
    opt = (adamw if opt == 'adamw' else
           f"Muon (peak rate {tc.get('muon_lr'):g}, momentum {tc.get('muon_momentum')}, weight decay "
           f"{tc.get('muon_weight_decay')}) for the blocks' weight matrices; {adamw} for the rest" if opt == 'muon' else
           f"{opt} (its settings are in the checkpoint's config)") + \
        (f", gradients clipped to norm {tc['grad_clip']:g}" if tc.get('grad_clip') else '')
    passes = f" ({seen / meta['splits']['train']['tokens']:.2f} passes over the training tokens)" if meta else ''
    doc.append(('table', ['training', "from the checkpoint's config and metrics.jsonl"], [
        ['steps', f"{iter_num:,} (max_iters {tc.get('max_iters', '?')})"],
        ['batch', f"{tc.get('batch_size')} x {tc.get('gradient_accumulation_steps')} sequences of "
                  f"{tc.get('block_size')} tokens = {per_step:,} tokens per step"],
        ['tokens seen', f"{seen:,}{passes}"], ['learning rate', sched], ['optimizer', opt],
        ['device', f"{tc.get('device')}, {tc.get('dtype')}" + (', compiled' if tc.get('compile') else '')],
        ['training time', f"{secs:,.0f} s, evaluation excluded: {seen / secs:,.0f} tokens/s" if secs else '-']]))

    at_ckpt = [r for r in eval_log if r['iter'] <= iter_num]
    est = at_ckpt[-1] if at_ckpt else None  # train.py's estimate at this checkpoint's iteration
    res = [[what, f"{results[k]['loss']:.4f}", f"{results[k]['ppl']:,.2f}", fmt(results[k].get('bpb'), '.4f')]
           for k, what in (('trained', 'this checkpoint'), ('untrained', 'untrained, same architecture'))
           if k in results] + [[f'uniform over {V} tokens', f'{math.log(V):.4f}', f'{V:,}', '-']]
    if est:
        res.append([f"train.py's estimate at iteration {est['iter']}", fmt(est.get('val_loss'), '.4f'),
                    fmt(est.get('val_ppl'), ',.2f'), fmt(est.get('val_bpb'), '.4f')])
    doc += [('h2', '3. Results'), ('table', ['model', 'val loss (nats/token)', 'perplexity', 'bits per byte'], res),
            ('p', (f'{eval_note}. "Untrained" is the same architecture freshly initialised (seed 0). ' if results else
                   'No exact evaluation: the val split was not found (see --data_dir). ')
             + "train.py's estimate comes from a few fixed batches, during training.")]

    rep = f'repeated_{REP_N}grams'
    doc += [('h2', '4. Decoding study'),
            ('p', f'{samples} stories per strategy of at most {max_new_tokens} new tokens, continuing the prompts '
                  f'below in turn (seed {seed}; greedy and beam search decode each prompt once). All on tokens: length '
                  'leaves out the final <|endoftext|>; distinct-n is the number of distinct n-grams over all n-grams '
                  f"of a strategy's stories taken together (Li et al. 2016); rep-{REP_N} is the share of a story's "
                  f'{REP_N}-grams that repeat one earlier in the same story (seq-rep-{REP_N}, Welleck et al. 2019; '
                  'loops give high values), averaged over stories; log p is the log-probability the model gives '
                  'the new tokens (a final <|endoftext|> included), summed over all stories and divided by their '
                  'number of tokens; eot is the share of stories that ended with <|endoftext|>.'),
            ('table', ['strategy', 'stories', 'length', 'distinct-1', 'distinct-2', 'distinct-3', f'rep-{REP_N} %',
                       'log p / token', 'eot %'],
             [[n, str(s['stories']), f"{s['mean_tokens']:.1f}", *(fmt(s[f'distinct_{k}'], '.3f') for k in (1, 2, 3)),
               fmt(s[rep] and 100 * s[rep], '.1f'), f"{s['logp_per_token']:.3f}", f"{100 * s['ended_with_eot']:.0f}"]
              for n, s in study.items()])]
    for p, prompt in enumerate(prompts):
        doc.append(('h3', f'Prompt {p + 1}: "{prompt}"'))
        for name, _ in STRATEGIES:
            new = next((new for q, new in stories[name] if q == p), None)
            if new is not None:  # the strategy's first story for this prompt
                text = printable(prompt + enc.decode(new[:-1] if new[-1] == eot else new)).strip()
                doc.append(('story', name, text + (' <|endoftext|>' if new[-1] == eot else ' [...]')))

    # discussion: every statement is a rule over the numbers above, and shows them
    facts = []
    if est and est.get('train_loss') is not None:
        gap = est['val_loss'] - est['train_loss']
        share = gap / est['val_loss']
        facts.append(f"Train vs val: at iteration {est['iter']} train.py measured val loss {est['val_loss']:.3f} and "
                     f"train loss {est['train_loss']:.3f}, a gap of {gap:+.3f} nats/token ({share:+.1%} of the val "
                     'loss): ' + ('the model fits its training text better than held-out text (gap above 5%).'
                                  if share > 0.05 else 'the held-out text is the easier one (gap below -5%).'
                                  if share < -0.05 else
                        'no sign of overfitting (gap within 5%).'))
    if len(at_ckpt) >= 2:
        a, z = at_ckpt[-2:]
        change = (z['val_loss'] - a['val_loss']) / a['val_loss']
        facts.append(f"Val curve: from iteration {a['iter']} to {z['iter']} the val loss went from {a['val_loss']:.3f} "
                     f"to {z['val_loss']:.3f} ({change:+.1%}): "
                     + ('still falling at the end, so longer training would likely lower it further.' if change < -0.005
                        else 'rising at the end.' if change > 0.005 else 'flat at the end (within 0.5%).'))
    if results:
        t, u = results['trained'], results['untrained']
        facts.append(f"Gain over the untrained baseline: val loss {u['loss']:.3f} -> {t['loss']:.3f} nats/token "
                     f"({u['loss'] - t['loss']:.3f} lower), perplexity {u['ppl']:,.1f} -> {t['ppl']:,.1f} "
                     f"({u['ppl'] / t['ppl']:,.1f}x lower); a uniform guess scores {math.log(V):.3f}.")
    ended = f'Stories ending with <|endoftext|> within {max_new_tokens} tokens'
    for what, key, spec in ((f'Repetition loops (rep-{REP_N})', rep, '.1%'),
                            ('Diversity (distinct-2)', 'distinct_2', '.3f'), (ended, 'ended_with_eot', '.0%')):
        vals = {n: s[key] for n, s in study.items() if s[key] is not None}
        if vals:
            lo, hi = min(vals, key=vals.get), max(vals, key=vals.get)
            facts.append(f'{what}: lowest with {lo} ({vals[lo]:{spec}}), highest with {hi} ({vals[hi]:{spec}}).')
    likeliest = max(study, key=lambda n: study[n]['logp_per_token'])
    if likeliest == max(study, key=lambda n: study[n][rep] or 0):
        facts.append(f"The model rates the text of {likeliest} likeliest ({study[likeliest]['logp_per_token']:.3f} "
                     'nats/token), and it is the one with the most repetition.')
    doc += [('h2', '5. Discussion'), ('p', 'Generated by rules from the measurements above:')]
    doc += [('li', f) for f in facts]
    doc += [('h2', 'Figures'), ('p', 'Each figure follows with its caption.')]
    doc += [('fig', rel, cap) for _, rel, cap in figures]

    # ---------------------------------------------------------------- report.md
    md, nfig = [], 0
    for kind, *a in doc:
        if kind[0] == 'h':
            md += ['#' * int(kind[1]) + ' ' + a[0], '']
        elif kind in ('p', 'li'):
            md += ['- ' + a[0] if kind == 'li' else a[0], '']
        elif kind == 'eq':
            md += ['$$', a[0], '$$', '']
        elif kind == 'table':
            md += ['| ' + ' | '.join(r) + ' |' for r in [a[0], ['---'] * len(a[0]), *a[1]]] + ['']
        elif kind == 'story':
            md += [f'**{a[0]}**', ''] + ['> ' + line for line in a[1].split('\n')] + ['']
        elif kind == 'fig':
            nfig += 1
            md += [f'![{a[1]}]({a[0]})', '', f'**Figure {nfig}.** {a[1]}', '']
    rundir.write_text(os.path.join(report_dir, 'report.md'), '\n'.join(md))

    # ---------------------------------------------------------------- report.pdf: fpdf2 lays out the same blocks
    class PDF(FPDF):
        def footer(self):  # the page number
            self.set_y(-12)
            self.set_font('sans', '', 8)
            self.cell(0, 5, str(self.page_no()), align='C')

    pdf = PDF(format='A4')
    pdf.set_title(doc[0][1])
    pdf.set_margins(18, 15, 18)
    pdf.set_auto_page_break(True, margin=15)
    fonts = os.path.join(matplotlib.get_data_path(), 'fonts', 'ttf')  # matplotlib's DejaVu: no system fonts needed
    for style, file in (('', 'DejaVuSans'), ('B', 'DejaVuSans-Bold'), ('I', 'DejaVuSans-Oblique')):
        pdf.add_font('sans', style, os.path.join(fonts, file + '.ttf'))
    pdf.add_page()
    matplotlib.rcParams['mathtext.fontset'] = 'cm'  # Computer Modern: equations look as LaTeX sets them
    nfig = text_pages = 0
    for kind, *a in doc:
        if kind[0] == 'h':
            level = int(kind[1]) - 1
            pdf.ln((0, 2.5, 1)[level])
            if pdf.will_page_break(14):  # no heading alone at the bottom of a page
                pdf.add_page()
            pdf.start_section(a[0], level)  # the PDF's outline
            pdf.set_font('sans', 'B', (15, 12, 10)[level])
            pdf.multi_cell(0, (7, 6, 5)[level], a[0], align='L', new_x='LMARGIN', new_y='NEXT')
            pdf.ln(1)
        elif kind in ('p', 'li'):
            pdf.set_font('sans', '', 9)
            if kind == 'li':
                pdf.cell(4, 4.4, '\u2022')
            pdf.multi_cell(0, 4.4, a[0], align='L', new_x='LMARGIN', new_y='NEXT')
            pdf.ln(1)
        elif kind == 'eq':  # rendered by mathtext at 300 dpi, placed at its natural size (shrunk if too wide)
            buf = io.BytesIO()
            mathtext.math_to_image(f'${a[0]}$', buf, prop=matplotlib.font_manager.FontProperties(size=11), dpi=300,
                                   format='png')
            w, hgt = (px / 300 * 25.4 for px in Image.open(buf).size)
            scale = min(1.0, (pdf.epw - 8) / w)
            if pdf.will_page_break(hgt * scale + 2):
                pdf.add_page()
            pdf.image(buf, x=pdf.l_margin + 8, w=w * scale, h=hgt * scale)
            pdf.ln(1.5)
        elif kind == 'table':
            head, body = a
            numeric = [all(re.fullmatch(r'[-+\d.,% ]+', r[i]) for r in body) for i in range(len(head))]
            pdf.set_font('sans', 'B', 8)
            widths = [pdf.get_string_width(h) for h in head]
            pdf.set_font('sans', '', 8)
            widths = [max([wd] + [pdf.get_string_width(r[i]) for r in body]) + 4 for i, wd in enumerate(widths)]
            if pdf.will_page_break(4.6 * (len(body) + 1)):  # keep a table on one page
                pdf.add_page()
            with pdf.table(width=min(pdf.epw, sum(widths)), col_widths=widths, align='LEFT', line_height=4.2,
                           text_align=['RIGHT' if n else 'LEFT' for n in numeric],
                           borders_layout='HORIZONTAL_LINES') as table:
                for r in [head, *body]:
                    table.row(r)
            pdf.ln(2)
        elif kind == 'story':
            if pdf.will_page_break(12):  # the name stays with the first lines of its story
                pdf.add_page()
            pdf.set_font('sans', 'B', 8)
            pdf.cell(0, 4, a[0], new_x='LMARGIN', new_y='NEXT')
            pdf.set_font('sans', 'I', 8)
            pdf.set_x(pdf.l_margin + 4)
            pdf.multi_cell(pdf.epw - 4, 3.7, a[1], align='L', new_x='LMARGIN', new_y='NEXT')
            pdf.ln(1)
        elif kind == 'fig':  # one page each, turned to landscape for a wide figure
            text_pages = text_pages or pdf.page_no()
            nfig += 1
            w, hgt = Image.open(os.path.join(report_dir, a[0])).size
            pdf.add_page(orientation='L' if w > hgt else 'P')
            pdf.start_section(f'Figure {nfig}', 2)
            scale = min(pdf.epw / w, (pdf.eph - 12) / hgt)
            pdf.image(os.path.join(report_dir, a[0]), w=w * scale, h=hgt * scale)
            pdf.set_font('sans', '', 9)
            pdf.multi_cell(0, 4.4, f'Figure {nfig}. {a[1]}', align='L', new_x='LMARGIN', new_y='NEXT')
    with rundir.atomic_open(os.path.join(report_dir, 'report.pdf'), 'wb') as f:
        f.write(pdf.output())
    if text_pages > 5:
        print(f"note: the text part is {text_pages} pages, over a course report's 5; fewer --prompts or a smaller "
              "--max_new_tokens shortens the stories")
    print(f"wrote report.md and report.pdf ({text_pages} text pages + {len(figures)} figures) "
          f"in {time.time() - t_start:.1f}s")
