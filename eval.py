"""
Exact evaluation of a checkpoint on a whole split of its data:

    python eval.py --out_dir=out                  # val split, windows every block_size // 2 tokens
    python eval.py --out_dir=out --baseline=True  # and the same architecture untrained, for scale

train.py's val loss is an estimate from a few random batches; this scores every token of the split
exactly once. The split is a stream of tokens t[0..N-1]; each of t[1..N-1] is predicted once from
what precedes it, so N-1 predictions. A model sees at most block_size tokens, so the stream is cut
into sliding windows of block_size tokens: the first window scores all its predictions, and each next
window starts `stride` tokens later and scores only its last `stride` ones, so every prediction after
the first window has at least block_size - stride tokens of context.
stride = block_size gives disjoint windows (the cheapest, but tokens at a window's start see almost no
context); smaller strides cost block_size / stride times as much and give every token more context.
The last window is moved back to end at the last token, so it too is a full window.

Reports loss (mean nats per predicted token), perplexity exp(loss), bits per byte (the summed loss in
bits over the UTF-8 bytes of the split's text, comparable across tokenizers), and the token and byte
counts; prints one line and writes out_dir/eval.json. `evaluate()` and `token_logprobs()` are importable
(report.py uses them).
"""
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import data
import rundir
import tokenizer
from configurator import configure
from device import DEVICE, DTYPE, autocast, check_device
from model import GPT

# -----------------------------------------------------------------------------
out_dir = 'out'
ckpt = 'best'           # 'best' | 'last' (out_dir/best.pt, out_dir/last.pt) | a path (looked up in out_dir first)
data_dir = ''           # '' = the data the checkpoint was trained on
split = 'val'
stride = 0              # tokens scored per window; 0 = block_size // 2
batch_size = 32         # windows per forward pass
device = DEVICE
dtype = DTYPE
baseline = False        # also evaluate the untrained model (same architecture, random init, fixed seed)
# -----------------------------------------------------------------------------


def windows(n_tokens, block_size, stride):
    """The sliding windows over a stream of n_tokens tokens, as (ends, scored, width): window i reads
    tokens[ends[i] - width : ends[i]], predicts tokens[ends[i] - width + 1 : ends[i] + 1], and scores
    only its last scored[i] predictions. Every prediction of tokens[1:] is scored in exactly one window."""
    last = n_tokens - 1              # the last token index, and the number of predictions
    width = min(block_size, last)    # a split shorter than a block is one short window
    ends = np.append(np.arange(width, last, stride), last)
    scored = np.diff(ends, prepend=0)  # the first window scores all `width` of its predictions
    return ends, scored, width


def check(n_tokens, block_size, stride, batch_size=1):
    """A one-line ValueError for arguments evaluate cannot honour (eval.py and report.py check them early)."""
    for broken, message in ((n_tokens < 2, f"only {n_tokens} token(s) to evaluate; a split needs at least 2"),
                            (not 1 <= stride <= block_size, f"stride must be in 1..block_size ({block_size}), or 0 "
                             f"for half of it; got {stride}"),
                            (batch_size < 1, f"batch_size must be at least 1, got {batch_size}")):
        if broken:
            raise ValueError(message)


@torch.inference_mode()
def evaluate(model, tokens, block_size, stride, batch_size, device, dtype='float32', n_bytes=None, progress=False):
    """Exact loss of model over the token stream `tokens` (array-like of ids, e.g. a np.memmap of a
    .bin file). Returns {'loss', 'ppl', 'tokens', 'windows', 'block_size', 'stride'} plus
    {'bytes', 'bpb'} when n_bytes, the UTF-8 size of the text, is given."""
    tokens = np.asarray(tokens)
    check(len(tokens), block_size, stride, batch_size)
    ends, scored, width = windows(len(tokens), block_size, stride)
    ctx = autocast(torch.device(device).type, dtype)
    offsets = np.arange(width + 1)
    positions = torch.arange(width, device=device)
    total = torch.zeros((), dtype=torch.float64, device=device)  # float64: millions of terms, no drift
    was_training = model.training
    model.eval()
    for b in tqdm(range(0, len(ends), batch_size), desc='eval', unit='batch', leave=False, disable=not progress):
        e, k = ends[b:b + batch_size], scored[b:b + batch_size]
        chunk = torch.from_numpy(tokens[(e - width)[:, None] + offsets].astype(np.int64)).to(device)
        x, y = chunk[:, :-1], chunk[:, 1:]  # (B, width) each
        keep = positions[None, :] >= width - torch.from_numpy(k).to(device)[:, None]  # (B, width): scored ones
        with ctx:  # only the scored positions go through the output layer, the costliest matmul of a small model
            logits = model.logits(model.trunk(x, positions)[keep])
        total += F.cross_entropy(logits.float(), y[keep], reduction='sum').double()
    model.train(was_training)
    n = len(tokens) - 1
    loss = total.item() / n
    out = {'loss': loss, 'ppl': math.exp(loss), 'tokens': n, 'windows': len(ends), 'block_size': block_size,
           'stride': stride}
    if n_bytes:
        out |= {'bytes': int(n_bytes), 'bpb': loss * n / n_bytes / math.log(2)}
    return out


@torch.inference_mode()
def token_logprobs(model, ids):
    """log p(ids[i] | ids[:i]) for i = 1..len(ids)-1 (a float tensor), each token predicted from up to block_size
    tokens before it: the windows of evaluate() with stride block_size // 2, so that -sum equals its summed loss."""
    assert not model.training, 'call model.eval() first: dropout would change the numbers'
    bs = model.config.block_size
    ends, scored, width = windows(len(ids), bs, max(1, bs // 2))
    seq, out = torch.as_tensor(ids, device=next(model.parameters()).device), []
    for e, k in zip(ends.tolist(), scored.tolist()):
        y = seq[e - width + 1:e + 1]
        logits, _ = model(seq[None, e - width:e], y[None])  # targets given: logits at every position
        out.append(logits[0, -k:].float().log_softmax(-1).gather(-1, y[-k:, None])[:, 0])
    return torch.cat(out)


if __name__ == '__main__':
    config = configure(globals())
    autocast(check_device(device), dtype)  # an unusable device or an unknown dtype: one line
    check(2, 1, 1, batch_size)
    path = rundir.find_checkpoint(out_dir, ckpt)
    model, checkpoint = GPT.from_checkpoint(path, device=device)
    block_size, vocab_size = model.config.block_size, model.config.vocab_size
    stride = stride or block_size // 2 or 1
    check(2, block_size, stride)

    # The data, which must be tokenized exactly as the checkpoint's training data was.
    data_dir = data_dir or checkpoint.get('config', {}).get('data_dir', '')
    tokenizer.check_same(data_dir, checkpoint.get('tokenizer'), path)
    tokens = data.open_split(data_dir, split, vocab_size)
    info = data.read_meta(data_dir)['splits'][split]

    t0 = time.time()
    result = evaluate(model, tokens, block_size, stride, batch_size, device, dtype, info['bytes'], progress=True)
    seconds = time.time() - t0
    print(f"{split}: loss {result['loss']:.4f}, ppl {result['ppl']:.2f}, {result['bpb']:.4f} bits/byte over "
          f"{result['tokens']:,} tokens ({result['bytes']:,} bytes), stride {stride}/{block_size}, {seconds:.1f}s")
    base = None
    if baseline:
        torch.manual_seed(0)  # a fixed seed: the same untrained model every time
        untrained = GPT(model.config).to(device)
        base = evaluate(untrained, tokens, block_size, stride, batch_size, device, dtype, info['bytes'], progress=True)
        print(f"untrained baseline: loss {base['loss']:.4f}, ppl {base['ppl']:.2f}, {base['bpb']:.4f} bits/byte "
              f"(a uniform guess over the {vocab_size} tokens: ppl {vocab_size})")

    report = {**result, 'split': split, 'data_dir': data_dir, 'checkpoint': path,
              'iter_num': checkpoint.get('iter_num'), 'vocab_size': vocab_size,
              'device': device, 'dtype': dtype, 'seconds': seconds, 'baseline': base, 'config': config}
    os.makedirs(out_dir, exist_ok=True)
    rundir.write_json(os.path.join(out_dir, 'eval.json'), report)  # atomic: a reader never sees half a file
    print(f"wrote {os.path.join(out_dir, 'eval.json')}")
