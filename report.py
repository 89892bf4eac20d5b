"""
Write up a training run as a course report would: the model's equations (exactly the components this checkpoint
uses, with its sizes), the data and training setup, exact headline numbers next to an untrained baseline, a
decoding study, and a discussion whose every statement is a rule over measured numbers.

$ python report.py --out_dir=out-tinystories-cpu

Everything is written under out_dir/report/:
  report.md, report.pdf             the report (LaTeX math); the .pdf: fpdf2's layout of it, then a page per figure
  decoding.json                     the decoding study: every story and the table's numbers
  training_curves.png               train/val loss against iteration and tokens seen, val perplexity, lr
  attention/layer{L}.png            one heatmap per head for the first prompt, axes labelled with its tokens
  weights/histograms.png            the values of every weight matrix, one panel per layer
  weights/spectral_norms.png        largest singular value of every weight matrix, by layer
  weights/spectral_norms.{json,csv} the same numbers (plus Frobenius norm, mean, std)
"""
import contextlib
import csv
import io
import json
import math
import os
import re
import time

# Run as a script, torch's waiting OpenMP threads sleep instead of spinning: on cores shared with other jobs a
# spinning thread holds the core its partner needs (README: report.py's timing). Set before torch is imported.
if __name__ == '__main__':
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
import matplotlib
matplotlib.use('Agg')  # files only: servers and CI have no display
import matplotlib.pyplot as plt
import numpy as np
import torch

import data
import rundir
import tokenizer
from decode import beam_search, generate
from device import check_device
from equations import equations
from eval import check, evaluate, token_logprobs
from model import GPT
from rundir import fmt, markdown_table

# -----------------------------------------------------------------------------
out_dir = 'out'
ckpt = 'best'           # 'best' | 'last' (out_dir/best.pt, out_dir/last.pt) | a path (looked up in out_dir first)
data_dir = ''           # '' = the data_dir the checkpoint was trained on (for the exact evaluation and the data setup)
prompts = ('Once upon a time there was a little girl named Lily. She', 'Tom and his dog went to the park. They',
           'The sun was hot, so')  # the decoding study's fixed prompts; the first also labels the attention heatmaps
samples = 12            # stories per decoding strategy for the study's table, >= 1, the prompts taken in turn
max_new_tokens = 120    # per story, >= 1; a story also ends at <|endoftext|>
seed = 1337             # story i is drawn with seed + i: same checkpoint and seed, same stories and table
device = 'cpu'
eval_stride = 0         # tokens scored per window over the whole val split (see eval.py); 0 = block_size // 2
eval_batch_size = 32
baseline_tokens = 20000  # the untrained baseline scores the first this many val tokens (~log V anywhere); 0 = all
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


if __name__ == '__main__':
    from html import escape
    from fpdf import FPDF, TextStyle
    from matplotlib import mathtext
    from PIL import Image
    from configurator import configure
    configure(globals())
    t_start = time.time()
    # Refuse settings that can't mean what the user wants, and missing inputs, before anything is written.
    metrics_path = os.path.join(out_dir, 'metrics.jsonl')
    for broken, message in (
            (samples < 1 or max_new_tokens < 1 or baseline_tokens < 0 or baseline_tokens == 1,
             'need samples >= 1, max_new_tokens >= 1 and baseline_tokens 0 (all) or >= 2; got '
             f'{samples}, {max_new_tokens}, {baseline_tokens}'),
            (not (isinstance(prompts, tuple) and prompts and all(isinstance(p, str) and p.strip() for p in prompts)),
             f"prompts={prompts!r} must be a tuple of non-empty strings, e.g. --prompts=\"('Once upon a time',)\""),
            (not os.path.isdir(out_dir), f'out_dir {out_dir} does not exist; pass --out_dir=<the directory of a run>'),
            (not os.path.isfile(metrics_path), f'no metrics log at {metrics_path}; pass the out_dir train.py wrote')):
        if broken:
            raise ValueError(message)
    check_device(device)
    records = rundir.read_metrics(metrics_path)
    train_log, eval_log = ([r for r in records if r['kind'] == kind] for kind in ('train', 'eval'))
    if not train_log and not eval_log:
        raise ValueError(f"{metrics_path} holds no records; train first (train.py logs to it)")
    ckpt_path = rundir.find_checkpoint(out_dir, ckpt)
    model, ck = GPT.from_checkpoint(ckpt_path, device=device)
    enc = tokenizer.from_checkpoint(ck, ckpt_path)
    eot, c, tc, iter_num = enc.eot_token, model.config, ck.get('config', {}), ck.get('iter_num', 0)
    V, stride = c.vocab_size, eval_stride or max(1, c.block_size // 2)
    check(2, c.block_size, stride, eval_batch_size)
    # The data given, else the checkpoint's own if it is still there; else only the copy of meta.json it keeps.
    ddir, meta, val = data_dir or tc.get('data_dir', ''), ck.get('meta'), None
    if data_dir or os.path.isfile(os.path.join(ddir, 'meta.json')):
        tokenizer.check_same(ddir, ck['tokenizer'], ckpt_path)
        meta, val = data.read_meta(ddir), data.open_split(ddir, 'val', V)
    report_dir = os.path.join(out_dir, 'report')
    for sub in ('attention', 'weights'):
        os.makedirs(os.path.join(report_dir, sub), exist_ok=True)
    print(f"loaded {ckpt_path} (iter {iter_num}, {model.num_params() / 1e6:.2f}M parameters); writing {report_dir}")
    figures = []  # (figure, path relative to report_dir, caption) in report order

    # ---------------------------------------------------------------- training curves
    fig, axs = plt.subplots(2, 2, figsize=(11, 7.5))
    dots = dict(marker='o', ms=3)
    losses = [(train_log, 'loss', 'train (batch)', dict(alpha=0.45, lw=1)),
              (eval_log, 'train_loss', 'train (eval)', dots), (eval_log, 'val_loss', 'val (eval)', dots)]
    for a, x, series, look in (
            (axs[0, 0], 'iter', losses, dict(ylabel='loss (nats/token)', title='loss vs iteration')),
            # log axis for tokens (the scaling-law view); the first eval at 0 tokens has no place on it
            (axs[0, 1], 'tokens', losses, dict(ylabel='loss (nats/token)', title='loss vs tokens seen', xscale='log')),
            (axs[1, 0], 'iter', [(eval_log, 'val_ppl', None, dict(dots, color='C2'))],
             dict(ylabel='perplexity', title='validation perplexity', yscale='log')),
            (axs[1, 1], 'iter', [(train_log, 'lr', None, dict(color='C3'))],
             dict(ylabel='learning rate', title='learning rate (at logged iterations)'))):
        for recs, key, label, style in series:
            pts = [(r[x], r[key]) for r in recs if r.get(key) is not None and (x == 'iter' or r[x] > 0)]
            if pts:
                a.plot(*zip(*pts), label=label, **style)
        a.set(xlabel='tokens seen' if x == 'tokens' else 'iteration', **look)
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
    maps = model.attention_maps(torch.tensor([ids], device=device))  # per layer (1, n_head, T, T)
    labels, T, H = [token_label(enc, i) for i in ids], len(ids), c.n_head
    # Panels grow with the prompt up to a point; past it, label every step-th token so labels stay legible.
    panel = min(8.0, max(3.6, 0.2 * T))
    fs = min(9.0, 0.65 * panel * 72 / T)
    step, fs = max(1, math.ceil(4.5 / fs)), max(fs, 4.5)
    nr = math.ceil(H / 4)  # at most 4 panels a row
    nc = math.ceil(H / nr)
    for layer, att in enumerate(maps):
        fig, axs = plt.subplots(nr, nc, figsize=(panel * nc + 1.2, panel * nr + 0.8), squeeze=False,
                                layout='constrained')
        for hd, a in enumerate(axs.flat):
            if hd >= H:
                a.axis('off')
                continue
            # the future (the causal mask) left blank, so 'cannot attend' differs from 'chose not to'
            im = a.imshow(np.ma.masked_where(np.triu(np.ones((T, T), bool), 1), att[0, hd].float().cpu().numpy()),
                          cmap=plt.get_cmap('viridis').with_extremes(bad='white'), vmin=0.0, vmax=1.0)
            a.set_xticks(range(0, T, step), labels[::step], rotation=90, fontsize=fs)
            a.set_yticks(range(0, T, step), labels[::step], fontsize=fs)
            a.set_title(f'head {hd}', fontsize=10)
        fig.colorbar(im, ax=axs, shrink=0.6, label='attention weight')
        fig.suptitle(f'layer {layer}: how much each query token (row) attends to each token so far (column)')
        figures.append((fig, f'attention/layer{layer}.png',
                        f'Attention of layer {layer} on the first prompt, one panel per head.'))

    # ---------------------------------------------------------------- weight statistics
    rows, values = [], {}  # one row per distinct matrix: named_parameters lists a tied one once, under its first name
    for name, p in model.named_parameters():
        if p.ndim == 2:  # norms' gains and biases are vectors, not matrices
            W, (layer, short) = p.detach().float(), layer_of(name)
            rows.append({'name': name, 'layer': layer, 'short': short, 'shape': list(W.shape),
                         'spectral_norm': torch.linalg.matrix_norm(W, 2).item(),
                         'frobenius_norm': torch.linalg.matrix_norm(W).item(), 'mean': W.mean().item(),
                         'std': W.std().item()})
            values.setdefault(layer, {})[short] = W.flatten().cpu().numpy()
    wpath = os.path.join(report_dir, 'weights', 'spectral_norms')
    rundir.write_json(wpath + '.json', {'checkpoint': ckpt_path, 'iter': iter_num, 'matrices': rows})
    writer = csv.DictWriter(buf := io.StringIO(), fieldnames=list(rows[0]), lineterminator='\n')
    writer.writeheader()
    writer.writerows({**r, 'shape': 'x'.join(map(str, r['shape']))} for r in rows)
    rundir.write_text(wpath + '.csv', buf.getvalue())

    layers = sorted(values, key=lambda k: -1 if k is None else k)  # None: outside the blocks, first
    nr = math.ceil(len(layers) / (nc := min(3, len(layers))))  # panels: up to 3 per row
    fig, axs = plt.subplots(nr, nc, figsize=(4.6 * nc, 3.4 * nr), squeeze=False)
    for a, layer in zip(axs.flat, layers):
        lo, hi = np.percentile(np.concatenate(list(values[layer].values())), [0.1, 99.9])
        for short, v in values[layer].items():
            a.hist(np.clip(v, lo, hi), bins=80, range=(lo, hi), density=True, histtype='step', label=short)
        a.set(title='outside the blocks' if layer is None else f'layer {layer}', yscale='log', xlabel='weight value')
        a.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
        a.legend(fontsize=6)
        a.grid(alpha=0.3)
    for a in axs.flat[len(layers):]:
        a.axis('off')
    fig.suptitle('weight values per matrix (density, log scale; clipped to the 0.1-99.9 percentiles)')
    fig.tight_layout()
    figures.append((fig, 'weights/histograms.png', 'Weight-value histograms of every matrix, one panel per layer.'))

    fig, a = plt.subplots(figsize=(10, 4.5))
    outside = {r['short'] for r in rows if r['layer'] is None}  # each a level line, after the blocks' matrices
    for short in sorted(dict.fromkeys(r['short'] for r in rows), key=lambda s: s in outside):
        layer, norm = zip(*[(r['layer'], r['spectral_norm']) for r in rows if r['short'] == short])
        if short in outside:
            a.axhline(norm[0], ls='--', color=f'C{len(a.lines)}', label=f'{short} (outside the blocks)')
        else:
            a.plot(layer, norm, marker='o', label=short)
    a.set(xlabel='layer', ylabel='spectral norm (largest singular value)', xticks=sorted(set(values) - {None}),
          title='spectral norm of every weight matrix')
    a.legend(fontsize=7)
    a.grid(alpha=0.3)
    figures.append((fig, 'weights/spectral_norms.png', 'Spectral norm of every weight matrix, by layer '
                    '(numbers in weights/spectral_norms.json and .csv).'))
    for fig, rel, _ in figures:
        with rundir.atomic_open(os.path.join(report_dir, rel), 'wb') as f:
            fig.savefig(f, format='png', dpi=150)
        plt.close(fig)
    print(f"wrote {len(figures)} figures and the spectral norms of {len(rows)} matrices")

    # ---------------------------------------------------------------- the exact evaluation
    # eval.py's numbers are reused when they are for this very checkpoint (same file and iteration, written after it)
    # and include the baseline; otherwise the trained model is scored here over the whole val split too.
    eval_json, results, prev = os.path.join(out_dir, 'eval.json'), {}, {}
    with contextlib.suppress(OSError, ValueError), open(eval_json) as f:  # none, or not JSON: nothing to reuse
        prev = json.load(f) if reuse_eval_json else {}
    if (isinstance(prev, dict) and prev.get('baseline') and prev.get('split') == 'val' and prev.get('iter_num')
            == iter_num and os.path.isfile(str(prev.get('checkpoint'))) and os.path.samefile(prev['checkpoint'],
            ckpt_path) and os.path.getmtime(eval_json) >= os.path.getmtime(ckpt_path)):
        results, scorer = {'trained': prev, 'untrained': prev['baseline']}, f'eval.py ({eval_json})'
    elif val is not None:
        results['trained'] = evaluate(model, val, c.block_size, stride, eval_batch_size, device,
                                      n_bytes=meta['splits']['val']['bytes'], progress=True)
        torch.manual_seed(0)  # eval.py's baseline seed: both scripts show the same untrained model
        head = val[:baseline_tokens or len(val)]  # its bytes: those of its stories' tokens, as prepare.py counts
        results['untrained'] = evaluate(GPT(c).to(device), head, c.block_size, stride, eval_batch_size, device,
                                        n_bytes=len(enc.decode_bytes([t for t in head[1:].tolist() if t != eot])))
        scorer = 'report.py'
    else:
        print(f"skipping the exact evaluation: no data in {ddir!r}; pass --data_dir to run it")
    if results:
        t, u = results['trained'], results['untrained']
        print(f"val loss {t['loss']:.4f}, untrained {u['loss']:.4f} ({u['tokens']:,} of {t['tokens']:,} predictions)")

    # ---------------------------------------------------------------- decoding study
    # Story i of a strategy continues prompt i % len(prompts), drawn with a generator of its own seeded with seed + i,
    # so that it does not depend on the other stories; a prompt's stories are decoded in one batch. Greedy and beam
    # search are deterministic: they decode each prompt once and that story stands for all of its draws.
    torch.set_num_threads(1)  # steps this small: a second thread's hand-off costs more than it saves (README)
    stories = {}  # strategy -> [story i's new token ids, a final eot included]
    for name, kw in STRATEGIES:
        stories[name] = [None] * samples
        for p, ids in enumerate(prompt_ids[:samples]):
            draws = range(p, samples, len(prompts))  # the stories that continue prompt p
            x = torch.tensor([ids[-c.block_size:]], device=device)
            if 'beam_width' in kw:
                out = beam_search(model, x, max_new_tokens, kw['beam_width'], eos_id=eot)[:, x.size(1):]
            else:
                gens = [torch.Generator(device=device).manual_seed(seed + i) for i in draws]
                k = 1 if kw['temperature'] == 0 else len(draws)
                out = torch.stack(list(generate(model, x.expand(k, -1), max_new_tokens, eos_id=eot,
                                                generator=gens[:k], **kw)), 1)
            for j, i in enumerate(draws):
                s = out[j % len(out)].tolist()
                stories[name][i] = s[:s.index(eot) + 1] if eot in s else s
    # the log-probability of each distinct story's new tokens, as eval.py scores a text
    distinct = {(i % len(prompts), tuple(s)) for v in stories.values() for i, s in enumerate(v)}
    logp = {(p, s): token_logprobs(model, prompt_ids[p] + list(s))[-len(s):].sum().item() for p, s in distinct}
    study = {}
    for name, v in stories.items():
        texts = [s[:-1] if s[-1] == eot else s for s in v]  # the story itself, without the eot
        study[name] = {'stories': len(v), 'mean_tokens': mean([len(t) for t in texts]),
                       **{f'distinct_{k}': distinct_n(texts, k) for k in (1, 2, 3)},
                       f'repeated_{REP_N}grams': mean([repeated_share(t) for t in texts]),
                       'logp_per_token': sum(logp[i % len(prompts), tuple(s)] for i, s in enumerate(v))
                       / sum(map(len, v)), 'ended_with_eot': mean([float(s[-1] == eot) for s in v])}
    rundir.write_json(os.path.join(report_dir, 'decoding.json'), {
        'checkpoint': ckpt_path, 'iter': iter_num, 'seed': seed, 'prompts': prompts, 'max_new_tokens': max_new_tokens,
        'table': study, 'stories': {k: [{'prompt': i % len(prompts), 'tokens': s, 'text': enc.decode(s)}
                                        for i, s in enumerate(v)] for k, v in stories.items()}})
    print(f"decoding study: {len(STRATEGIES)} strategies x {samples} stories of up to {max_new_tokens} tokens")

    # ---------------------------------------------------------------- the report as blocks: (kind, *content)
    doc = [('h1', f'Training report: {os.path.basename(os.path.abspath(out_dir))}'),
           ('p', f'Checkpoint {ckpt_path} at iteration {iter_num}; written by report.py on '
                 f'{time.strftime("%Y-%m-%d %H:%M")}.'),
           ('h2', '1. Model'),
           ('p', f'A decoder-only transformer with {model.num_params():,} parameters ({V * c.n_embd:,} of them in the '
                 f'token embedding{", which is also the output matrix" if c.tie_weights else ""}): L = {c.n_layer} '
                 f'blocks, d = {c.n_embd} channels, h = {c.n_head} heads, a context of T = {c.block_size} tokens and a '
                 f"vocabulary of V = {V}. The equations are generated from the checkpoint's configuration: they show "
                 'exactly the components this model uses.')]
    for _, text, eqs in equations(c):
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
    secs = done[-1]['time'] if done else 0  # seconds of training, evaluation excluded
    decay_end = (f"over a time budget of {tc['time_budget']:g} s of training" if tc.get('time_budget') else
                 f"at step {tc.get('lr_decay_iters') or tc.get('max_iters')}")
    sched = f"linear warmup over {tc.get('warmup_iters')} steps to {tc.get('learning_rate'):g}, then " + {
        'cosine': f"cosine decay to {tc.get('min_lr'):g} {decay_end}", 'constant': 'constant', 'wsd': f"constant until "
        f"the last {tc.get('cooldown_frac', 0.5):g} of the decay, then linear to {tc.get('min_lr'):g} {decay_end}",
        'vaswani': 'decay as 1/sqrt(step) (Vaswani et al. 2017)'}[tc.get('lr_schedule', 'cosine')]
    own = ', '.join(f"{what} at {tc[k]:g}" for k, what in (('embedding_lr', 'the embedding'), ('head_lr', 'the head'))
                    if tc.get(k))  # their own peak rates
    adamw = (f"AdamW, betas ({tc.get('beta1')}, {tc.get('beta2')}), weight decay {tc.get('weight_decay')} on matrices"
             + (f" ({own}, without weight decay)" if own else ''))
    muon = (f"{'Nor' if tc.get('normuon') else ''}Muon (peak rate {tc.get('muon_lr'):g}, momentum "
            f"{tc.get('muon_momentum')}, weight decay {tc.get('muon_weight_decay')})")
    opt = (f"{muon} for the blocks' weight matrices; {adamw} for the rest"
           if tc.get('optimizer') == 'muon' else adamw) + \
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
    est = at_ckpt[-1] if at_ckpt else {}  # train.py's estimate at this checkpoint's iteration
    res = [[what, fmt(results[k]['loss']), fmt(results[k]['ppl'], ',.2f'), fmt(results[k].get('bpb'))]
           for k, what in (('trained', 'this checkpoint'), ('untrained', 'untrained, same architecture'))
           if k in results] + [[f'uniform over {V} tokens', fmt(math.log(V)), f'{V:,}', '-']]
    if est:
        res.append([f"train.py's estimate at iteration {est['iter']}", fmt(est.get('val_loss')),
                    fmt(est.get('val_ppl'), ',.2f'), fmt(est.get('val_bpb'))])
    note = (f"{scorer} scored the trained model's {t['tokens']:,} predictions (every val token but the first) in "
            f"windows of {t['block_size']} tokens every {t['stride']}, and the untrained model's "
            + ('same ones' if u['tokens'] == t['tokens'] else f"first {u['tokens']:,} of them") + '. "Untrained" is '
            'the same architecture freshly initialised (seed 0). ' if results else
            'No exact evaluation: the val split was not found (see --data_dir). ')
    doc += [('h2', '3. Results'), ('table', ['model', 'val loss (nats/token)', 'perplexity', 'bits per byte'], res),
            ('p', note + "train.py's estimate comes from a few fixed batches, during training.")]

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
             [[n, s['stories'], fmt(s['mean_tokens'], '.1f'), *(fmt(s[f'distinct_{k}'], '.3f') for k in (1, 2, 3)),
               fmt(s[rep] and 100 * s[rep], '.1f'), fmt(s['logp_per_token'], '.3f'),
               fmt(100 * s['ended_with_eot'], '.0f')] for n, s in study.items()])]
    for p, prompt in enumerate(prompts[:samples]):
        doc.append(('h3', f'Prompt {p + 1}: "{prompt}"'))
        for name, _ in STRATEGIES:  # story p is the strategy's first for prompt p
            s = stories[name][p]
            text = printable(prompt + enc.decode(s[:-1] if s[-1] == eot else s)).strip()
            doc.append(('story', name, text + (' <|endoftext|>' if s[-1] == eot else ' [...]')))

    # discussion: every statement is a rule over the numbers above, and shows them
    facts = []
    if est.get('train_loss') is not None:
        gap = est['val_loss'] - est['train_loss']
        share = gap / est['val_loss']
        facts.append(f"Train vs val: at iteration {est['iter']} train.py measured val loss {est['val_loss']:.3f} and "
                     f"train loss {est['train_loss']:.3f}, a gap of {gap:+.3f} nats/token ({share:+.1%} of the val "
                     'loss): ' + ('the model fits its training text better than held-out text (gap above 5%).'
                                  if share > 0.05 else 'the held-out text is the easier one (gap below -5%).'
                                  if share < -0.05 else 'no sign of overfitting (gap within 5%).'))
    if len(at_ckpt) >= 2:
        a, z = at_ckpt[-2:]
        change = (z['val_loss'] - a['val_loss']) / a['val_loss']
        facts.append(f"Val curve: from iteration {a['iter']} to {z['iter']} the val loss went from {a['val_loss']:.3f} "
                     f"to {z['val_loss']:.3f} ({change:+.1%}): "
                     + ('still falling at the end, so longer training would likely lower it further.' if change < -0.005
                        else 'rising at the end.' if change > 0.005 else 'flat at the end (within 0.5%).'))
    if results:
        facts.append(f"Gain over the untrained baseline: val loss {u['loss']:.3f} -> {t['loss']:.3f} nats/token "
                     f"({u['loss'] - t['loss']:.3f} lower), perplexity {u['ppl']:,.1f} -> {t['ppl']:,.1f} "
                     f"({u['ppl'] / t['ppl']:,.1f}x lower); a uniform guess scores {math.log(V):.3f}.")
    for what, key, spec in ((f'Repetition loops (rep-{REP_N})', rep, '.1%'), ('Diversity (distinct-2)', 'distinct_2',
                             '.3f'), (f'Stories ending with <|endoftext|> within {max_new_tokens} tokens',
                                      'ended_with_eot', '.0%')):
        vals = {n: s[key] for n, s in study.items() if s[key] is not None}
        if vals:
            lo, hi = min(vals, key=vals.get), max(vals, key=vals.get)
            facts.append(f'{what}: lowest with {lo} ({vals[lo]:{spec}}), highest with {hi} ({vals[hi]:{spec}}).')
    likeliest = max(study, key=lambda n: study[n]['logp_per_token'])
    if likeliest == max(study, key=lambda n: study[n][rep] or 0):
        facts.append(f"The model rates the text of {likeliest} likeliest ({study[likeliest]['logp_per_token']:.3f} "
                     'nats/token), and it is the one with the most repetition.')
    doc += [('h2', '5. Discussion'), ('p', 'Generated by rules from the measurements above:')]
    doc += [('li', f) for f in facts] + [('h2', 'Figures'), ('p', 'Each figure follows with its caption.')]

    # ---------------------------------------------------------------- report.md and report.pdf, from the same blocks
    md, html, images = [], [], {}  # images: the equations as mathtext sets them, for the PDF
    matplotlib.rcParams['mathtext.fontset'] = 'cm'  # Computer Modern: equations look as LaTeX sets them
    for kind, *a in doc:
        e = [escape(str(x)) for x in a]
        if kind in ('h1', 'h2', 'h3', 'p', 'li'):
            md.append(('#' * int(kind[1]) + ' ' if kind[0] == 'h' else '- ' if kind == 'li' else '') + a[0])
            html.append(f'<ul><li>{e[0]}</li></ul>' if kind == 'li' else f'<{kind}>{e[0]}</{kind}>')
        elif kind == 'eq':  # at 300 dpi, placed at its natural size (shrunk to the page's width)
            md.append(f'$$\n{a[0]}\n$$')
            images[f'eq{len(images)}'] = buf = io.BytesIO()
            mathtext.math_to_image(f'${a[0]}$', buf, prop=matplotlib.font_manager.FontProperties(size=11), dpi=300)
            w, h = (px * 72 / 300 for px in Image.open(buf).size)  # points
            html.append(f'<p><img src="eq{len(images) - 1}" width="{min(w, 480)}" height="{h * min(1, 480 / w)}"></p>')
        elif kind == 'table':  # columns as wide as their longest entry (long text wraps); numbers to the right
            width = [min(40, max(len(str(x)) for x in col)) + 2 for col in zip(a[0], *a[1])]
            right = [all(re.fullmatch(r'[-+\d.,% ]+', str(x)) for x in col) for col in zip(*a[1])]
            md.append('\n'.join(markdown_table(*a)))
            html.append('<table><tr>' + ''.join(f'<th width="{w}">{escape(x)}</th>' for x, w in zip(a[0], width))
                        + '</tr>' + ''.join('<tr>' + ''.join(f'<td align="{"right" if r else "left"}">{escape(str(x))}'
                                                             '</td>' for x, r in zip(row, right)) + '</tr>'
                                            for row in a[1]) + '</table>')
        elif kind == 'story':
            md.append(f'**{a[0]}**\n\n' + '\n'.join('> ' + line for line in a[1].split('\n')))
            html.append(f'<p><b>{e[0]}</b></p><blockquote>{e[1]}</blockquote>'.replace('\n', '<br>'))
    md += [f'![{cap}]({rel})\n\n**Figure {n}.** {cap}' for n, (_, rel, cap) in enumerate(figures, 1)]
    rundir.write_text(os.path.join(report_dir, 'report.md'), '\n\n'.join(md) + '\n')

    pdf = FPDF(format='A4')
    pdf.set_title(doc[0][1])
    pdf.set_margins(18, 15, 18)
    fonts = os.path.join(matplotlib.get_data_path(), 'fonts', 'ttf')  # matplotlib's DejaVu: no system fonts needed
    for style, file in (('', 'DejaVuSans'), ('B', 'DejaVuSans-Bold'), ('I', 'DejaVuSans-Oblique')):
        pdf.add_font('sans', style, os.path.join(fonts, file + '.ttf'))
    pdf.add_page()
    pdf.set_font('sans', size=9)
    pdf.write_html('\n'.join(html), font_family='sans', image_map=images.get, table_line_separators=True,
                   tag_styles={'h1': TextStyle(font_size_pt=15, font_style='B', b_margin=1),
                               'h2': TextStyle(font_size_pt=12, font_style='B', t_margin=4, b_margin=1),
                               'h3': TextStyle(font_size_pt=10, font_style='B', t_margin=3, b_margin=1),
                               'p': TextStyle(t_margin=1.5), 'li': TextStyle(l_margin=5, t_margin=1),
                               'blockquote': TextStyle(font_size_pt=8, font_style='I', l_margin=4, b_margin=1)})
    text_pages = pdf.page_no()
    for n, (_, rel, cap) in enumerate(figures, 1):  # one page each, turned to landscape for a wide figure
        w, h = Image.open(os.path.join(report_dir, rel)).size
        pdf.add_page(orientation='L' if w > h else 'P')
        pdf.start_section(f'Figure {n}', 2)
        pdf.image(os.path.join(report_dir, rel), w=w * min(pdf.epw / w, (pdf.eph - 12) / h))
        pdf.multi_cell(0, 4.4, f'Figure {n}. {cap}')
    with rundir.atomic_open(os.path.join(report_dir, 'report.pdf'), 'wb') as f:
        f.write(pdf.output())
    if text_pages > 5:
        print(f"note: the text part is {text_pages} pages, over a course report's 5; fewer --prompts or a smaller "
              "--max_new_tokens shortens the stories")
    print(f"wrote report.md and report.pdf ({text_pages} text pages + {len(figures)} figures) "
          f"in {time.time() - t_start:.1f}s")
