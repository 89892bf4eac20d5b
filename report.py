"""
Look inside a trained model and write up the run: training curves, attention heatmaps, weight
statistics, and a report (Markdown and PDF) with the final numbers next to an untrained baseline
and stories from three decoding methods.

$ python report.py --out_dir=out-tinystories-cpu

Everything is written under out_dir/report/:
  training_curves.png              train/val loss against iteration and tokens seen, val perplexity, lr
  attention/layer{L}.png           one heatmap per head for `prompt`, axes labelled with its tokens
  weights/histograms.png           the values of every weight matrix, one panel per layer
  weights/spectral_norms.png       largest singular value of every weight matrix, by layer
  weights/spectral_norms.{json,csv} the same numbers (plus Frobenius norm, mean, std)
  report.md, report.pdf            the write-up, linking or containing all of the above
"""
import csv
import io
import json
import math
import os
import re
import textwrap
import time

import matplotlib
matplotlib.use('Agg')  # files only: servers and CI have no display
matplotlib.rcParams['pdf.fonttype'] = 42  # embed TrueType: the PDF's text can be searched and copied
import matplotlib.pyplot as plt
from matplotlib.backends.backend_pdf import PdfPages
import numpy as np
import torch

import tokenizer
from configurator import configure
from eval import evaluate
from device import check_device
from model import GPT, GPTConfig
from rundir import find_checkpoint

# -----------------------------------------------------------------------------
out_dir = 'out'
ckpt = 'best'           # 'best' | 'last' (out_dir/best.pt, out_dir/last.pt) | a path (looked up in out_dir first)
data_dir = ''           # '' = the data_dir the checkpoint was trained on (for the exact evaluation)
prompt = 'Once upon a time there was a little girl named Lily. She'  # for the heatmaps and the samples
device = 'cpu'
seed = 1337             # the samplers' generator: same seed, same stories
max_new_tokens = 120    # per sample; generation also stops at <|endoftext|>
temperature = 0.8       # for the top-k and nucleus samples (greedy ignores it)
top_k = 40
top_p = 0.9
eval_tokens = 16384     # val predictions (from the start of the split) for the exact evaluation; 0 = all of them
eval_stride = 0         # tokens scored per window (see eval.py); 0 = block_size: disjoint windows, as train.py's
                        # estimate scores them, so the two compare; eval.py's default block_size // 2 scores a bit lower
eval_batch_size = 16
reuse_eval_json = True  # use out_dir/eval.json instead when `python eval.py --baseline=True` scored this checkpoint
# -----------------------------------------------------------------------------
config = configure(globals())
t_start = time.time()
# Refuse settings that can't mean what the user wants before the slow part.
if not (temperature > 0 and top_k >= 1 and 0 < top_p <= 1 and max_new_tokens >= 1):
    raise SystemExit(f"need temperature > 0, top_k >= 1, 0 < top_p <= 1 and max_new_tokens >= 1 for the samples; "
                     f"got {temperature}, {top_k}, {top_p}, {max_new_tokens}")
if eval_tokens < 0 or eval_stride < 0 or eval_batch_size < 1:
    raise SystemExit(f"need eval_tokens >= 0, eval_stride >= 0, eval_batch_size >= 1; "
                     f"got {eval_tokens}, {eval_stride}, {eval_batch_size}")
device_type = check_device(device)  # one-line exit for an unusable device
if not prompt.strip():
    raise SystemExit("prompt is empty; pass --prompt=<text> (it labels the attention heatmaps and starts the samples)")


def save_atomic(path, data):
    """Write text or bytes via a temporary file in the same directory, so readers never see half a file."""
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def save_png(fig, path):
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=110)
    save_atomic(path, buf.getvalue())


def read_metrics(path):
    """metrics.jsonl -> (train records, eval records), each sorted by iteration. A resumed run logs the
    iterations after its checkpoint again; the later copy wins, so curves never double back."""
    runs = {'train': {}, 'eval': {}}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                kind, it = rec['kind'], int(rec['iter'])
            except (ValueError, KeyError, TypeError):
                raise SystemExit(f"{path} line {n} is not a metrics record; fix or delete that line")
            if kind in runs:
                seen = runs[kind]
                for old in [i for i in seen if i >= it]:  # a restart from an earlier checkpoint
                    del seen[old]
                seen[it] = rec
    return [runs['train'][i] for i in sorted(runs['train'])], [runs['eval'][i] for i in sorted(runs['eval'])]


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


def fmt_ppl(x):
    return '-' if x is None else format(x, '.2f' if x < 1e6 else '.4g')


# ---------------------------------------------------------------- inputs
if not os.path.isdir(out_dir):
    raise SystemExit(f"out_dir {out_dir} does not exist; pass --out_dir=<the directory train.py wrote>")
metrics_path = os.path.join(out_dir, 'metrics.jsonl')
if not os.path.isfile(metrics_path):
    raise SystemExit(f"no metrics log at {metrics_path}; pass the out_dir of a train.py run")
train_log, eval_log = read_metrics(metrics_path)
if not train_log and not eval_log:
    raise SystemExit(f"{metrics_path} holds no records; train first (train.py logs to it)")
try:
    ckpt_path = find_checkpoint(out_dir, ckpt)  # the same lookup as sample.py and eval.py
except FileNotFoundError as e:
    raise SystemExit(str(e)) from None

model, ck = GPT.from_checkpoint(ckpt_path, device=device)
model.eval()
if 'tokenizer' not in ck:
    raise SystemExit(f"{ckpt_path} holds no tokenizer state, so its token ids can't be read; "
                     "use a checkpoint written by train.py")
enc = tokenizer.from_state(ck['tokenizer'])
gconf = model.config
train_conf = ck.get('config', {})
iter_num = ck.get('iter_num', 0)
report_dir = os.path.join(out_dir, 'report')
for sub in ('attention', 'weights'):
    os.makedirs(os.path.join(report_dir, sub), exist_ok=True)
print(f"loaded {ckpt_path} (iter {iter_num}, {model.num_params() / 1e6:.2f}M parameters); writing {report_dir}")
figures = []  # (figure, path relative to report_dir, caption) in report order; also the PDF's pages

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
# The model saw <|endoftext|> before every story in training, so the prompt starts with it too.
ids = [enc.eot_token] + enc.encode(prompt, allowed_special={'<|endoftext|>'})
if len(ids) > gconf.block_size:
    print(f"prompt is {len(ids)} tokens; the heatmaps use its first {gconf.block_size} (block_size)")
ids = ids[:gconf.block_size]
prompt_idx = torch.tensor([ids], dtype=torch.long, device=device)
with torch.no_grad():
    maps = model.attention_maps(prompt_idx)  # per layer (1, n_head, T, T)
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
    fig, axs = plt.subplots(nr, nc, figsize=(panel * nc + 1.2, panel * nr + 0.8), squeeze=False, layout='constrained')
    for h, a in enumerate(axs.flat):
        if h >= n_head:
            a.axis('off')
            continue
        # blank out the future (the causal mask), so 'cannot attend' differs from 'chose not to'
        im = a.imshow(np.ma.masked_where(np.triu(np.ones((T, T), bool), 1), att[h]), cmap=cmap, vmin=0.0, vmax=1.0)
        a.set_xticks(range(0, T, step), labels[::step], rotation=90, fontsize=fs)
        a.set_yticks(range(0, T, step), labels[::step], fontsize=fs)
        a.set_title(f'head {h}', fontsize=10)
    fig.colorbar(im, ax=axs, shrink=0.6, label='attention weight')
    fig.suptitle(f'layer {layer}: how much each query token (row) attends to each token so far (column)')
    figures.append((fig, f'attention/layer{layer}.png', f'Attention of layer {layer}, one panel per head.'))

# ---------------------------------------------------------------- weight statistics
# named_parameters lists a tied matrix once (under its first name): one row per distinct matrix.
rows = []
groups = {}  # layer (None = outside the blocks) -> [(short name, values)]
param_counts = {}
for name, p in model.named_parameters():
    layer, short = layer_of(name)
    param_counts[layer] = param_counts.get(layer, 0) + p.numel()
    if p.ndim != 2:
        continue  # norms' gains and biases are vectors, not matrices
    W = p.detach().float()
    rows.append({'name': name, 'layer': layer, 'short': short, 'shape': list(W.shape),
                 'spectral_norm': torch.linalg.matrix_norm(W, 2).item(),
                 'frobenius_norm': torch.linalg.matrix_norm(W, 'fro').item(),
                 'mean': W.mean().item(), 'std': W.std().item()})
    groups.setdefault(layer, []).append((short, W.flatten().cpu().numpy()))
wpath = os.path.join(report_dir, 'weights', 'spectral_norms')
save_atomic(wpath + '.json', json.dumps({'checkpoint': ckpt_path, 'iter': iter_num, 'matrices': rows}, indent=1))
buf = io.StringIO()
writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator='\n')
writer.writeheader()
writer.writerows({**r, 'shape': 'x'.join(map(str, r['shape']))} for r in rows)
save_atomic(wpath + '.csv', buf.getvalue())

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
    save_png(fig, os.path.join(report_dir, rel))
    fig.set_layout_engine('none')  # keep the layout just computed: the PDF page needs no second (slow) pass
print(f"wrote {len(figures)} figures and the spectral norms of {len(rows)} matrices")

# ---------------------------------------------------------------- exact evaluation and the untrained baseline
# Whole-split numbers from eval.py are preferred when they are for this very checkpoint (same file, same
# iteration, written after it) and include the baseline; otherwise both models are scored here on the first
# eval_tokens tokens of the val split, with eval.py's evaluate(), so the two rows are directly comparable.
results, eval_note = {}, ''
eval_json = os.path.join(out_dir, 'eval.json')
prev = None
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
    eval_note = (f"eval.py scored the whole val split ({prev['tokens']:,} predictions, "
                 f"stride {prev['stride']}/{prev['block_size']}; {eval_json})")
else:
    ddir = data_dir or train_conf.get('data_dir', '')
    try:
        with open(os.path.join(ddir, 'meta.json')) as f:
            data_meta = json.load(f)
        val = np.memmap(os.path.join(ddir, 'val.bin'), dtype=np.dtype(data_meta['dtype']), mode='r')
    except (OSError, ValueError, KeyError, TypeError) as e:
        if data_dir:  # asked for explicitly: a mistake to report; otherwise the data may simply have moved
            raise SystemExit(f"can't read the val split in {data_dir} ({e}); "
                             "pass --data_dir=<a directory made by prepare.py>")
        print(f"skipping the exact evaluation: no readable val split in {ddir!r} ({e}); pass --data_dir to run it")
        val = None
    if val is not None and data_dir and tokenizer.state_from_dir(data_dir) != ck['tokenizer']:
        raise SystemExit(f"{data_dir} was tokenized differently from the data {ckpt_path} was trained on; "
                         "pass --data_dir=<data prepared with the same tokenizer>")
    if val is not None and len(val) >= 2:
        part = 'the whole val split'
        if eval_tokens and eval_tokens + 1 < len(val):
            part = 'the start of the val split (eval_tokens; eval.py --baseline=True scores all of it)'
            val = np.asarray(val[:eval_tokens + 1])
            # bits per byte needs the UTF-8 bytes of the scored text; <|endoftext|> marks a break, not text
            scored = val[1:]
            n_bytes = len(enc.decode_bytes(scored[scored != enc.eot_token].tolist()))
        else:
            n_bytes = data_meta['splits']['val']['bytes']
        stride = eval_stride or gconf.block_size
        if not 1 <= stride <= gconf.block_size:
            raise SystemExit(f"eval_stride must be in 1..{gconf.block_size} (block_size), or 0 for block_size; "
                             f"got {stride}")
        torch.manual_seed(0)  # eval.py's baseline seed, so both scripts show the same untrained model
        untrained = GPT(GPTConfig.from_dict(ck['model_args'])).to(device)
        for key, m in (('trained', model), ('untrained', untrained)):
            results[key] = evaluate(m, val, gconf.block_size, stride, eval_batch_size, device, n_bytes=n_bytes)
        del untrained
        eval_note = (f"report.py scored {part}: {results['trained']['tokens']:,} predictions, "
                     f"stride {stride}/{gconf.block_size}")
if results:
    print(f"val loss {results['trained']['loss']:.4f}, untrained {results['untrained']['loss']:.4f}: {eval_note}")
uniform = math.log(gconf.vocab_size)

# ---------------------------------------------------------------- samples
samples = []
methods = (('greedy', dict(temperature=0.0)),
           (f'top-k (k={top_k}, temperature {temperature})', dict(temperature=temperature, top_k=top_k)),
           (f'nucleus (p={top_p}, temperature {temperature})', dict(temperature=temperature, top_p=top_p)))
for label, kw in methods:
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        out = model.generate(prompt_idx, max_new_tokens, eos_id=enc.eot_token, generator=g, **kw)
    new = out[0, prompt_idx.shape[1]:].tolist()
    if enc.eot_token in new:
        new = new[:new.index(enc.eot_token)]
    samples.append((label, printable(prompt + enc.decode(new))))

# ---------------------------------------------------------------- report.md
tokens_at_ckpt = max((r.get('tokens', 0) for r in train_log + eval_log if r['iter'] <= iter_num), default=None)
last_eval = eval_log[-1] if eval_log else None
last_train = train_log[-1] if train_log else None
md = [f'# Training report: {os.path.basename(os.path.abspath(out_dir))}', '',
      f'Checkpoint `{ckpt_path}` at iteration {iter_num}; '
      f'written by report.py on {time.strftime("%Y-%m-%d %H:%M")}.', '',
      '## Results', '',
      '| model | val loss (nats/token) | perplexity | bits per byte |', '|---|---|---|---|']
for key, what in (('trained', 'this checkpoint, exact'), ('untrained', 'untrained, exact')):
    if key in results:
        r = results[key]
        md.append(f"| {what} | {r['loss']:.4f} | {fmt_ppl(r['ppl'])} | {fmt(r.get('bpb'), '.4f')} |")
md.append(f'| uniform guess over {gconf.vocab_size} tokens | {uniform:.4f} | {gconf.vocab_size} | - |')
if last_eval:
    md.append(f"| metrics.jsonl, last eval (iter {last_eval['iter']}) | {fmt(last_eval.get('val_loss'), '.4f')} "
              f"| {fmt_ppl(last_eval.get('val_ppl'))} | {fmt(last_eval.get('val_bpb'), '.4f')} |")
note = (f'Exact rows: {eval_note}. "Untrained" is the same architecture freshly initialised (seed 0). '
        if results else 'No exact evaluation: the val split was not found (see --data_dir). ')
md += ['', note + 'The metrics.jsonl row is the estimate train.py logged during training from random batches.', '']
if last_eval:
    md.append(f"Train loss at the last eval (iter {last_eval['iter']}): {fmt(last_eval.get('train_loss'), '.4f')}.")
if last_train:
    md.append(f"Last logged batch loss (iter {last_train['iter']}): {last_train['loss']:.4f}.")
md += ['', '## Model', '',
       f'{model.num_params():,} parameters, {model.num_params(non_embedding=True):,} without the embeddings.', '',
       '| setting | value |', '|---|---|']
md += [f'| {k} | {v} |' for k, v in ck['model_args'].items()]
md += ['', '| parameters in | count |', '|---|---|']
md += [f"| {'outside the blocks (embeddings, final norm)' if k is None else f'layer {k}'} | {param_counts[k]:,} |"
       for k in sorted(param_counts, key=lambda k: -1 if k is None else k)]
padding = sum(param_counts.values()) - model.num_params()
if padding:  # model.py pads the vocabulary for fast matmuls; those rows are stored but never used
    md += ['', f'These count stored tensors, including {padding:,} parameters of vocabulary padding '
           'that the total above leaves out.']
md += ['', '## Training', '',
       f'Tokens trained to this checkpoint: {fmt(tokens_at_ckpt, ",")} (iteration {iter_num}).', '',
       '| setting | value |', '|---|---|']
md += [f'| {k} | {v} |' for k, v in train_conf.items() if k not in ck['model_args']]  # the model's are above
md += ['', '## Samples', '',
       f'Prompt: "{prompt}" (after <|endoftext|>), at most {max_new_tokens} new tokens, seed {seed}.', '']
for label, text in samples:
    md += [f'### {label}', ''] + ['> ' + line for line in text.split('\n')] + ['']
md += ['## Figures', '']
for n, (_, rel, caption) in enumerate(figures, 1):
    md += [f'![{caption}]({rel})', '', f'**Figure {n}.** {caption}', '']
md += ['## Spectral norms', '', '| matrix | shape | spectral norm | Frobenius norm |', '|---|---|---|---|']
md += [f"| {r['name']} | {'x'.join(map(str, r['shape']))} | {r['spectral_norm']:.4f} | {r['frobenius_norm']:.4f} |"
       for r in rows]
save_atomic(os.path.join(report_dir, 'report.md'), '\n'.join(md) + '\n')


# ---------------------------------------------------------------- report.pdf: the same text, then the figures
def text_pages(md):
    """Lay the Markdown out on A4 pages with plain matplotlib text (headings, wrapped paragraphs, tables in
    monospace); image links are left out because the figures follow as pages of their own."""
    mono, mono_bold = dict(size=7.5, family='monospace'), dict(size=7.5, family='monospace', weight='bold')
    body, quote = dict(size=9.5), dict(size=9.5, family='serif', style='italic')
    lines = []  # (text, matplotlib text properties)
    i = 0
    while i < len(md):
        s = md[i]
        if s.startswith('|'):  # a table: align its columns in monospace, drop the |---| rule
            table = []
            while i < len(md) and md[i].startswith('|'):
                if not re.fullmatch(r'\|(-+\|)+', md[i]):
                    table.append([c.strip() for c in md[i].strip('|').split('|')])
                i += 1
            widths = [max(len(r[c]) for r in table if c < len(r)) for c in range(len(table[0]))]
            for k, r in enumerate(table):
                row = '  '.join(c.replace('`', '').ljust(w) for c, w in zip(r, widths)).rstrip()
                lines += [(t, mono_bold if k == 0 else mono) for t in textwrap.wrap(row, 120) or ['']]
            lines.append(('', mono))
            continue
        i += 1
        if s.startswith('!['):  # the figure itself is a page of its own; drop the blank line after it too
            i += i < len(md) and not md[i]
            continue
        s = s.replace('**', '').replace('`', '')
        heading = re.match(r'(#+) (.*)', s)
        if heading:
            lines.append((heading.group(2), dict(size={1: 16, 2: 13}.get(len(heading.group(1)), 11), weight='bold')))
        elif s.startswith('> '):  # a sample: indented, in italics
            wrapped = textwrap.wrap(s[2:], 100, initial_indent='    ', subsequent_indent='    ')
            lines += [(t, quote) for t in wrapped or ['']]
        else:
            lines += [(t, body) for t in textwrap.wrap(s, 105) or ['']]
    pages, page, y = [], [], 0.0
    for line in lines:
        h = line[1]['size'] * 1.45 / 72 / 11.69  # line height as a fraction of the A4 page
        if y + h > 0.90 and page:
            pages.append(page)
            page, y = [], 0.0
        page.append((y, line))
        y += h
    return pages + [page] if page else pages


pdf_path = os.path.join(report_dir, 'report.pdf')
pages = text_pages(md)
with PdfPages(pdf_path + '.tmp') as pdf:
    for n, page in enumerate(pages, 1):
        fig = plt.figure(figsize=(8.27, 11.69))
        for y, (text, props) in page:
            fig.text(0.07, 0.95 - y, text, va='top', **props)
        fig.text(0.5, 0.03, f'{n}', ha='center', size=8, color='0.4')
        pdf.savefig(fig)
        plt.close(fig)
    for n, (fig, _, _) in enumerate(figures, 1):
        fig.text(0.005, 0.995, f'Figure {n}', size=8, color='0.3', va='top')  # the corner the titles leave free
        pdf.savefig(fig)
        plt.close(fig)
os.replace(pdf_path + '.tmp', pdf_path)
print(f"wrote report.md and report.pdf ({len(pages)} text pages + {len(figures)} figures) "
      f"in {time.time() - t_start:.1f}s")
