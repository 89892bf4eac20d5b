"""
The prepared data as every script reads it (prepare.py writes it): data_dir/meta.json, which names the tokenizer,
the token dtype and each split's token, story and byte counts, and one flat file of token ids per split
(train.bin, val.bin), read through np.memmap so that only the windows a script reads are paged in.
Each check lives here once, so train.py, eval.py, bench.py and report.py refuse a broken directory alike.
"""
import json
import os

import numpy as np
import torch


def read_meta(data_dir):
    """data_dir/meta.json as prepare.py wrote it. FileNotFoundError when there is none, ValueError naming the
    field when it is damaged: either way, prepare.py makes a good one."""
    path = os.path.join(data_dir, 'meta.json')
    fix = f're-run python prepare.py --out_dir={data_dir} --force'
    try:
        with open(path, encoding='utf-8') as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"no prepared data in {data_dir} ({path} is missing); "
                                f"run python prepare.py --out_dir={data_dir}") from None
    except ValueError as e:  # not JSON, or not UTF-8
        raise ValueError(f"{path} is damaged (not JSON: {e}); {fix}") from None
    m = meta if isinstance(meta, dict) else {}
    vocab, eot, splits = m.get('vocab_size'), m.get('eot_id'), m.get('splits')
    for broken, problem in (
            (not isinstance(meta, dict), 'not a JSON object'),
            (m.get('tokenizer') not in ('bpe', 'gpt2'), f"tokenizer {m.get('tokenizer')!r} is not 'bpe' or 'gpt2'"),
            (m.get('dtype') not in ('uint16', 'uint32'), f"dtype {m.get('dtype')!r} is not 'uint16' or 'uint32'"),
            (not (type(vocab) is int and type(eot) is int and 0 <= eot < vocab),
             f'vocab_size={vocab!r}, eot_id={eot!r}: need whole numbers with 0 <= eot_id < vocab_size'),
            (not (isinstance(splits, dict) and {'train', 'val'} <= set(splits) and all(
                isinstance(v, dict) and type(v.get('tokens')) is int and v['tokens'] >= 0 for v in splits.values())),
             'splits must give the token count of train and val')):
        if broken:
            raise ValueError(f"{path} is damaged ({problem}); {fix}")
    return meta


def open_split(data_dir, split, vocab_size=None, block_size=None):
    """The tokens of one split, a read-only np.memmap, checked against meta.json: its size, and (one pass, ~5 ms
    per million tokens) that no id reaches vocab_size, which would otherwise fail deep inside the embedding.
    block_size: the split must hold a whole window of block_size inputs plus one target."""
    meta = read_meta(data_dir)
    if split not in meta['splits']:
        raise ValueError(f"{data_dir} has no split {split!r}; use one of {', '.join(sorted(meta['splits']))}")
    path, dtype, want = os.path.join(data_dir, f'{split}.bin'), np.dtype(meta['dtype']), meta['splits'][split]['tokens']
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing; rerun python prepare.py --out_dir={data_dir} --force")
    if os.path.getsize(path) != want * dtype.itemsize:
        raise ValueError(f"{path} holds {os.path.getsize(path)} bytes, not the {want} {dtype} tokens meta.json "
                         f"describes; rerun python prepare.py --out_dir={data_dir} --force")
    if block_size is not None and want <= block_size:
        raise ValueError(f"{path} has {want} tokens, too few for block_size={block_size}; "
                         f"use --block_size={max(want - 1, 1)} or less, or prepare more data")
    tokens = np.memmap(path, dtype=dtype, mode='r') if want else np.zeros(0, dtype)
    top = int(tokens.max()) if want else -1
    vocab_size = vocab_size or meta['vocab_size']
    if top >= vocab_size:
        raise ValueError(f"{path} holds token id {top}, past vocab_size={vocab_size}; the model and the data are "
                         f"not from the same prepare.py run: rerun prepare.py, or pass the data the model trained on")
    return tokens


def get_batch(tokens, offsets, block_size, device):
    """Windows of tokens starting at offsets (B,) -> inputs and next-token targets, (B, block_size) int64 each,
    on device. On a GPU the copy is pinned and asynchronous: it overlaps the work already queued there."""
    xy = torch.from_numpy(np.stack([tokens[i:i + block_size + 1] for i in offsets.tolist()]).astype(np.int64))
    x, y = xy[:, :-1].contiguous(), xy[:, 1:].contiguous()
    if torch.device(device).type == 'cuda':
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)
