"""
TinyStories (or any text corpus) -> out_dir/{train.bin, val.bin, meta.json[, tokenizer.json]}.

    python prepare.py                                  # roneneldan/TinyStories from the hub, streamed
    python prepare.py --source=../shared/data/tinystories/train-v1-head.txt \\
                      --val_source=../shared/data/tinystories/validation-head.txt
    python prepare.py --source=wikitext --hf_config=wikitext-2-raw-v1 --out_dir=data/wikitext2
    python prepare.py --tokenizer=gpt2 --out_dir=data/tinystories-gpt2

A source is a Hugging Face hub dataset name, or local files: .txt (stories separated by
<|endoftext|>; in a file without one, blank-line-separated blocks are the units), .jsonl/.json/.parquet
(one story per row, in column text_column), a directory of such files or a glob; a comma-separated list
mixes them. Each story is written as <|endoftext|> followed by its tokens, so every story starts after
a delimiter and the model learns how stories begin.

One pass over the data with bounded memory: stories are streamed, encoded in worker processes in
~1 MB batches, and appended to temporary files that replace the old outputs only once all of them are
complete and on disk (meta.json last), so a failed or interrupted run leaves the earlier outputs as they
were. out_dir belongs to one prepare.py at a time (a second one fails, naming the first). Running again
with the same settings and inputs does nothing unless --force. Tests call main(argv) in-process.
"""
import codecs
import contextlib
import glob
import itertools
import json
import os
import random
from collections import deque

import numpy as np

import data
import rundir
import tokenizer as tok  # as tok: `tokenizer` is the setting below
from configurator import configure, setting_keys

# -----------------------------------------------------------------------------
# settings (override with --key=value or a config file)
source = os.environ.get('TINYSTORIES_SOURCE', 'roneneldan/TinyStories')  # hub dataset, or file(s)/dir/glob, comma-separated
val_source = ''           # validation file(s); '' = the hub's official 'validation' split, else a carve-out
val_fraction = 0.0        # > 0: carve this fraction of the source's stories out for val (seeded); 0 = val_source /
                          # official split, and 0.05 when there is neither
max_stories = 0           # read at most this many stories from each source (train, separate val); 0 = all
hf_config = ''            # hub dataset config, e.g. 'wikitext-2-raw-v1' for --source=wikitext
text_column = 'text'      # the column holding the text in hub datasets and .jsonl/.json/.parquet files
tokenizer = 'bpe'         # 'bpe' (trained here on the train text) or 'gpt2' (OpenAI's, 50257 tokens)
# 4096: TinyStories' vocabulary is small (a 3-4 year old's words), so at 4096 tokens nearly every word
# it uses is already one token: on held-out stories 4096 gives 3.92 bytes/token and 8192 only 4% fewer
# tokens (4.10), while the embedding/output matrix of a small model stays half the size (1.2M at n_embd=288).
vocab_size = 4096         # bpe only: tokens including <|endoftext|>
bpe_train_bytes = 100_000_000  # bpe only: learn the merges from the first ~100 MB (in characters) of train
                          # stories, not all 2 GB: counting 100 MB takes ~30 s on 2 cores, and more text
                          # barely changes a 4k-8k vocabulary; 0 = all of it
gpt2_dir = ''             # gpt2 only: directory with vocab.json + merges.txt; '' = $GPT2_DIR, $SHARED_DATA/gpt2,
                          # else tiktoken's copy (downloaded once, then cached)
out_dir = 'data/tinystories'
force = False             # redo even when out_dir already holds this exact preparation; replace a train.bin/val.bin
                          # that no meta.json of prepare.py describes
num_proc = 0              # processes for BPE counting and encoding; 0 = all cores
seed = 1337               # for the val_fraction carve-out
# -----------------------------------------------------------------------------
_DEFAULTS = {k: globals()[k] for k in setting_keys(globals())}  # every main() call starts from these

# Below, names that are not settings start with '_' so that configure() leaves them alone.
_FORMATS = {'.txt': 'txt', '.jsonl': 'json', '.json': 'json', '.parquet': 'parquet'}  # extension -> reader
_BATCH_CHARS = 1 << 20     # text per encoding job: large enough to amortise inter-process traffic
_HINT = ('--source=../shared/data/tinystories/train-v1-head.txt '
         '--val_source=../shared/data/tinystories/validation-head.txt (local files; or set TINYSTORIES_SOURCE)')


# What the readers skip is counted per file, so the user hears of it: invalid UTF-8 in .txt files (replaced by
# U+FFFD like errors='replace'), and table rows whose text is not a string (None, a number, a list...).
n_replaced, replaced, not_text = [0], {}, {}  # running count; per file; per file


def count_and_replace(err):
    n_replaced[0] += 1
    return '\ufffd', err.end


codecs.register_error('prepare_count_replace', count_and_replace)


def resolve(spec, what):
    """'a.txt,dir/,*.parquet,owner/name' -> [('file', path) | ('hub', name)]; ValueError/FileNotFoundError if not."""
    out = []
    for item in (s.strip() for s in spec.split(',')):
        if not item:
            continue
        ext = os.path.splitext(item)[1].lower()
        if os.path.isdir(item):
            files = sorted(p for p in glob.glob(os.path.join(item, '**', '*'), recursive=True)
                           if os.path.splitext(p)[1].lower() in _FORMATS)
            if not files:
                raise ValueError(f"{what}: directory {item} holds no .txt/.jsonl/.json/.parquet files; point it at one that does")
            out += [('file', p) for p in files]
        elif any(c in item for c in '*?['):
            files = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not files:
                raise FileNotFoundError(f"{what}: no files match {item}; check the pattern")
            out += [('file', p) for p in files]
        elif os.path.isfile(item):
            if ext not in _FORMATS:
                raise ValueError(f"{what}: unsupported file type '{ext or item}' ({item}); use .txt, .jsonl, .json or .parquet")
            out.append(('file', item))
        elif ext or item.startswith(('.', '/', '~')) or item.count('/') > 1:
            raise FileNotFoundError(f"{what}: {item} not found; pass an existing file, directory or glob")
        else:
            out.append(('hub', item))  # 'roneneldan/TinyStories', 'wikitext'
    for kind, p in out:
        if kind == 'file' and os.path.splitext(p)[1].lower() not in _FORMATS:
            raise ValueError(f"{what}: unsupported file type '{os.path.splitext(p)[1] or p}' ({p}); use .txt, .jsonl, .json or .parquet")
    if not out:
        raise ValueError(f"{what} is empty; pass a file, directory, glob or hub dataset name")
    return out


def has_eot(path):
    """Does the file contain <|endoftext|> anywhere? (scans in binary, stops at the first one)"""
    key, tail = tok.EOT.encode(), b''
    with open(path, 'rb') as f:
        while chunk := f.read(1 << 20):
            if key in tail + chunk:
                return True
            tail = chunk[-len(key):]
    return False


def txt_stories(path):
    """Stories of a .txt file, streamed line by line: split at every <|endoftext|> if there is one,
    else at blank lines. Each story is stripped of surrounding whitespace; empty ones are skipped."""
    by_eot, before, lines = has_eot(path), n_replaced[0], []
    with open(path, encoding='utf-8', errors='prepare_count_replace') as f:
        for line in f:
            if by_eot and tok.EOT in line:
                first, *rest = line.split(tok.EOT)
                lines.append(first)
                for piece in rest:
                    if story := ''.join(lines).strip():
                        yield story
                    lines = [piece]
            elif not by_eot and not line.strip():
                if story := ''.join(lines).strip():
                    yield story
                lines = []
            else:
                lines.append(line)
    if story := ''.join(lines).strip():
        yield story
    if n_replaced[0] > before:
        replaced[path] = replaced.get(path, 0) + n_replaced[0] - before


def rows_stories(rows, column, where):
    """Stories from dataset rows (dicts). A row whose text is not a string is counted in not_text[where];
    a missing column is a ValueError naming the columns there are."""
    rows = iter(rows)
    while True:
        try:
            row = next(rows, None)
        except Exception as e:  # corrupt file, network drop, ...: one line, not a datasets traceback
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ''
            raise ValueError(f"can't read {where} ({type(e).__name__}: {msg}); check it is a valid, complete dataset") from None
        if row is None:
            return
        if column not in row:
            raise ValueError(f"{where} has no column {column!r} (columns: {', '.join(row)}); pass --text_column=<one of them>")
        if not isinstance(row[column], str):
            not_text[where] = not_text.get(where, 0) + 1
        elif story := row[column].strip():
            yield story


def load(what, hint, *args, **kwargs):
    """datasets.load_dataset(*args, **kwargs) streamed, or its failure in one line naming what and the hint."""
    import datasets  # imported only here: it is slow to import and only these paths need it
    try:
        return datasets.load_dataset(*args, streaming=True, **kwargs)
    except Exception as e:
        raise ValueError(f"can't read {what} ({type(e).__name__}: {str(e)[:200]}); {hint}") from None


def check_hub(name):
    """Fail in seconds, with what to do instead, when the hub can't be reached or has no such dataset."""
    if os.environ.get('HF_HUB_OFFLINE', '0') not in ('0', '') or os.environ.get('HF_DATASETS_OFFLINE', '0') not in ('0', ''):
        return  # offline mode: `datasets` may still have it cached; load_dataset will say if not
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError
    try:
        HfApi().dataset_info(name, timeout=10)
    except RepositoryNotFoundError:
        raise ValueError(f"no dataset {name!r} on the Hugging Face hub (or it is private); check the name, or use {_HINT}") from None
    except Exception as e:
        raise ConnectionError(f"can't reach the Hugging Face hub for {name} ({type(e).__name__}); use {_HINT}") from None


def hub_splits(name, config):
    import datasets
    try:
        return datasets.get_dataset_split_names(name, config or None)
    except Exception as e:
        raise ValueError(f"can't load {name} from the Hugging Face hub ({type(e).__name__}: {str(e)[:200]}); "
                         f"check --hf_config, or use {_HINT}") from None


def stories(entries, hub_split, column, config=''):
    """Every story of entries (from resolve) in order; hub datasets give their split hub_split (config: hf_config)."""
    for kind, p in entries:
        ext = os.path.splitext(p)[1].lower()
        if kind == 'hub':
            rows = load(f'{p} ({hub_split}) from the Hugging Face hub', f'use {_HINT}', p, config or None,
                        split=hub_split)
            yield from rows_stories(rows, column, f'{p} ({hub_split})')
        elif _FORMATS[ext] == 'txt':
            yield from txt_stories(p)
        else:
            rows = load(p, f'check it is valid {ext}', _FORMATS[ext], data_files=[p], split='train')
            yield from rows_stories(rows, column, p)


def fingerprint(entries):
    """Size and mtime of each input file: a re-run is a no-op only if these are unchanged too."""
    return {p: [os.path.getsize(p), os.stat(p).st_mtime_ns] for kind, p in entries if kind == 'file'}


# Encoding workers. Module-level, and the script body is main(), so 'spawn' can import them.
_worker = {}  # this process's encoding and token dtype


def init_worker(name, gpt2_dir_, bpe_text, dtype):
    _worker['enc'] = tok.load_gpt2(gpt2_dir_ or None) if name == 'gpt2' else tok.bpe_from_json(bpe_text)
    _worker['dtype'] = np.dtype(dtype)


def encode_batch(job):
    """(split, stories) -> (split, token array with <|endoftext|> before each story, #stories, #UTF-8 bytes)"""
    split, texts = job
    enc = _worker['enc']
    ids = [enc.eot_token]
    for tokens in enc.encode_ordinary_batch(texts, num_threads=1):
        ids += tokens  # a literal '<|endoftext|>' inside a story stays ordinary text, not a delimiter
        ids.append(enc.eot_token)
    return split, np.array(ids[:-1], dtype=_worker['dtype']), len(texts), sum(len(t.encode('utf-8')) for t in texts)


def encoded(jobs, init_args, nproc):
    """encode_batch over jobs, results in input order. The first two jobs run here; from the third on
    (the input is big enough to repay starting processes) a pool of nproc processes takes over, at most 2*nproc jobs in flight so that
    memory stays bounded however fast the input arrives."""
    init_worker(*init_args)
    pool, pending = None, deque()
    try:
        for i, job in enumerate(jobs):
            if pool is None and nproc > 1 and i == 2:
                import multiprocessing
                # 'spawn' rather than fork: the `datasets` stream may hold threads, which fork can't copy safely
                pool = multiprocessing.get_context('spawn').Pool(nproc, init_worker, init_args)
                from tqdm import tqdm
                tqdm.write(f'encoding on {nproc} worker processes')
            if pool is None:
                yield encode_batch(job)
                continue
            pending.append(pool.apply_async(encode_batch, (job,)))
            if len(pending) >= 2 * nproc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
    finally:
        if pool is not None:
            pool.terminate()


def batched(labelled):
    """(split, story) stream -> (split, [stories]) jobs of ~_BATCH_CHARS characters each."""
    buf, size = {'train': [], 'val': []}, {'train': 0, 'val': 0}
    for split, story in labelled:
        buf[split].append(story)
        size[split] += len(story)
        if size[split] >= _BATCH_CHARS:
            yield split, buf[split]
            buf[split], size[split] = [], 0
    for split in buf:
        if buf[split]:
            yield split, buf[split]


def earlier(out_dir):
    """meta.json of an earlier prepare.py run in out_dir, or None (none there, or damaged)."""
    try:
        meta = data.read_meta(out_dir)
        return meta if isinstance(meta.get('args'), dict) and isinstance(meta.get('inputs'), dict) else None
    except (OSError, ValueError):
        return None


def is_done(old, out_dir, same_as, inputs):
    """Does out_dir hold exactly this preparation: meta.json old records the same settings (same_as: all but
    force and num_proc) and input files, and the files it describes are whole?"""
    try:
        return (old is not None and {k: v for k, v in old['args'].items() if k not in ('force', 'num_proc')} == same_as
                and old['inputs'] == inputs
                and all(os.path.getsize(os.path.join(out_dir, s + '.bin')) == old['splits'][s]['tokens'] * np.dtype(old['dtype']).itemsize
                        for s in ('train', 'val'))
                and (old['tokenizer'] == 'gpt2' or os.path.isfile(os.path.join(out_dir, 'tokenizer.json'))))
    except OSError:
        return False  # a .bin is missing: prepare again


def main(argv=None):
    """python prepare.py ARGS, as a function: main(['--source=a.txt', ...]). Every call starts from the defaults
    above. Anything the user can fix raises an OSError or ValueError with a one-line message (at the command
    line, configure()'s hook prints just that line)."""
    globals().update(_DEFAULTS)
    n_replaced[0] = 0
    replaced.clear()
    not_text.clear()
    config = configure(globals(), argv)
    from tqdm import tqdm

    # ---- check the settings before touching anything
    for broken, message in (
            (tokenizer not in ('bpe', 'gpt2'), f"tokenizer must be 'bpe' or 'gpt2', got {tokenizer!r}"),
            (not 0 <= val_fraction < 1, f"val_fraction must be in [0, 1), got {val_fraction}"),
            (val_source and val_fraction, "val_source and val_fraction both set; pass one of them (a file for val, "
             "or a fraction to carve out)"),
            (min(max_stories, bpe_train_bytes, num_proc) < 0, "max_stories, bpe_train_bytes and num_proc must be >= 0 "
             "(0 = all)"),
            (os.path.exists(out_dir) and not os.path.isdir(out_dir), f"out_dir {out_dir} is a file; pass a directory")):
        if broken:
            raise ValueError(message)
    if tokenizer == 'bpe':
        tok.check_vocab_size(vocab_size)  # now, not after reading the data
    train_entries = resolve(source, '--source')
    val_entries = resolve(val_source, '--val_source') if val_source else []
    nproc = num_proc or os.cpu_count() or 1
    # force and num_proc don't change the output; the JSON round trip makes tuples compare equal to lists
    same_as = json.loads(json.dumps({k: v for k, v in config.items() if k not in ('force', 'num_proc')}))
    inputs = fingerprint(train_entries + val_entries)

    # ---- out_dir is ours until we return: a second prepare.py into it fails, naming this one
    fresh = not os.path.exists(out_dir)
    try:
        held = rundir.lock(out_dir)
    except BlockingIOError:
        raise
    except OSError:  # read-only, or not ours to write: fine if it already holds this preparation
        if force or not is_done(earlier(out_dir), out_dir, same_as, inputs):
            raise
        held = None
    try:
        # ---- a re-run with the same settings and unchanged input files is a no-op
        old = earlier(out_dir)
        if not force and is_done(old, out_dir, same_as, inputs):
            print(f"{out_dir} already holds this preparation (meta.json matches the settings and inputs); "
                  "nothing to do (--force redoes it)")
            return
        # files of ours that no meta.json of prepare.py describes may be another tool's: replace them only when told to
        known = set() if old is None else {'train.bin', 'val.bin', old.get('tokenizer_file')}
        theirs = [k for k in ('train.bin', 'val.bin') + (('tokenizer.json',) if tokenizer == 'bpe' else ())
                  if k not in known and os.path.exists(os.path.join(out_dir, k))]
        if theirs and not force:
            raise ValueError(f"{out_dir} holds {', '.join(theirs)} that no meta.json of prepare.py describes; "
                             "pass another --out_dir, or --force to replace them")

        # ---- where validation comes from
        carve = val_fraction
        hub_names = [p for kind, p in train_entries + val_entries if kind == 'hub']
        for name in dict.fromkeys(hub_names):
            check_hub(name)
        if not val_entries and not carve:
            if train_entries and all(kind == 'hub' and 'validation' in hub_splits(p, hf_config) for kind, p in train_entries):
                val_entries = [('hub', p) for _, p in train_entries]  # the official split, e.g. TinyStories' 22k stories
                print("val: the official 'validation' split")
            else:
                carve = 0.05
                print(f"val: no --val_source and no official validation split, so 5% of the stories (seed {seed}); "
                      "set --val_fraction or --val_source to choose")

        def labelled():
            """(split, story) for the whole input: the source (minus a seeded carve-out), then the val source."""
            rng = random.Random(seed)
            for story in itertools.islice(stories(train_entries, 'train', text_column, hf_config), max_stories or None):
                yield ('val' if carve and rng.random() < carve else 'train'), story
            for story in itertools.islice(stories(val_entries, 'validation', text_column, hf_config), max_stories or None):
                yield 'val', story

        # ---- the tokenizer: GPT-2's, or a BPE trained on the first bpe_train_bytes of train stories
        stream, head = labelled(), []
        no_stories = (f"no training stories in {source}; check the file(s) hold text (for tables: the column "
                      f"--text_column={text_column!r})")
        if tokenizer == 'gpt2':
            enc, bpe_text = tok.load_gpt2(gpt2_dir or None), None
        else:
            n_chars, train_texts = 0, []
            with tqdm(desc='reading for bpe', unit=' stories', unit_scale=True) as bar:
                for split, story in stream:  # the stories read here are kept and encoded below
                    head.append((split, story))
                    bar.update(1)
                    if split == 'train':
                        train_texts.append(story)
                        n_chars += len(story)
                        if bpe_train_bytes and n_chars >= bpe_train_bytes:
                            break
                    elif not carve:
                        break  # train part done, now reading the separate val source: stop holding it
            if not train_texts:
                raise ValueError(no_stories)
            print(f"bpe: learning {vocab_size - 257} merges from {len(train_texts):,} stories ({n_chars / 1e6:.1f}M chars)")
            merges = tok.train_bpe(train_texts, vocab_size, num_proc=nproc)
            if len(merges) < vocab_size - 257:
                print(f"bpe: the text has no more pairs to merge after {len(merges)} merges: vocab_size {257 + len(merges)}")
            del train_texts
            bpe_text = tok.bpe_json(merges)
            enc = tok.bpe_from_json(bpe_text)
        dtype = 'uint16' if enc.n_vocab < 2**16 else 'uint32'

        # ---- write every output to a temporary file; leaving `publish` renames each into place, meta.json last
        names = ['meta.json'] + (['tokenizer.json'] if bpe_text else []) + ['train.bin', 'val.bin']
        splits = {s: {'tokens': 0, 'stories': 0, 'bytes': 0} for s in ('train', 'val')}
        with contextlib.ExitStack() as publish:
            out = {k: publish.enter_context(rundir.atomic_open(os.path.join(out_dir, k), 'wb')) for k in names}
            if bpe_text:
                out['tokenizer.json'].write(bpe_text.encode('utf-8'))
            with tqdm(desc='encoding', unit=' stories', unit_scale=True) as bar:
                for split, ids, n, nbytes in encoded(batched(itertools.chain(head, stream)),
                                                     (tokenizer, gpt2_dir, bpe_text, dtype), nproc):
                    out[split + '.bin'].write(ids.tobytes())
                    splits[split]['tokens'] += len(ids)
                    splits[split]['stories'] += n
                    splits[split]['bytes'] += nbytes
                    bar.update(n)
                    head = []  # so the bpe-training stories can be freed once the chain is past them
            if not splits['train']['stories']:
                raise ValueError(no_stories)
            if not splits['val']['stories']:
                raise ValueError(f"no validation stories ({val_source or 'val_fraction'} gave none); "
                                 "pass --val_source=FILE or a larger --val_fraction")
            meta = {'version': 1, 'tokenizer': tokenizer, 'tokenizer_file': 'tokenizer.json' if bpe_text else None,
                    'vocab_size': enc.n_vocab, 'eot_id': enc.eot_token, 'dtype': dtype, 'splits': splits,
                    'source': source, 'args': config, 'inputs': inputs, 'invalid_utf8': sum(replaced.values()),
                    'not_text_rows': sum(not_text.values())}
            out['meta.json'].write((json.dumps(meta, indent=2) + '\n').encode('utf-8'))
            for f in out.values():  # all of it on disk before the first rename: a full disk still changes nothing
                f.flush()
                os.fsync(f.fileno())
            # Until the new meta.json lands the directory reads as incomplete, never as old meta.json over new data.
            # Removed are only files an earlier prepare.py wrote: its meta.json, and its tokenizer.json when this
            # run has none (it would mislead).
            for k in ['meta.json'] + (['tokenizer.json'] if not bpe_text and 'tokenizer.json' in known else []):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(out_dir, k))
    finally:
        with contextlib.suppress(OSError):  # a failed first run leaves no directory behind
            if held and fresh and os.listdir(out_dir) == [rundir.LOCK]:
                os.remove(os.path.join(out_dir, rundir.LOCK))
                os.rmdir(out_dir)
        if held:
            held.close()
    if replaced:
        print(f"warning: invalid UTF-8 replaced with U+FFFD: {sum(replaced.values())} sequences "
              f"({', '.join(f'{n} in {p}' for p, n in replaced.items())})")
    if not_text:
        print(f"warning: skipped {sum(not_text.values())} rows whose {text_column!r} is not a string "
              f"({', '.join(f'{n} in {w}' for w, n in not_text.items())})")
    for s, v in splits.items():
        print(f"{s}: {v['stories']:,} stories, {v['tokens']:,} tokens, {v['bytes'] / v['tokens']:.2f} bytes/token")
    print(f"wrote {out_dir}/{{train.bin,val.bin,meta.json{',tokenizer.json' if bpe_text else ''}}} "
          f"({tokenizer}, vocab {enc.n_vocab}, {dtype})")


if __name__ == '__main__':
    os.environ.setdefault('USE_TORCH', '0')  # else `datasets` imports torch (seconds) that prepare never uses
    main()
