"""
The two tokenizers, both served by tiktoken so that encoding runs in Rust:

- 'gpt2': OpenAI's GPT-2 byte-level BPE (50257 tokens), built from its published vocab.json +
  merges.txt (or encoder.json + vocab.bpe) where a directory holds them, so it works offline;
  elsewhere tiktoken downloads (and caches) them.
- 'bpe': a byte-level BPE trained here on the training text. Text is first cut into pre-tokens by
  GPT-2's regex (so merges never cross word/space/punctuation classes) and at every <|endoftext|>
  (so nothing ever merges across a story boundary); then the most frequent adjacent pair is merged,
  again and again, until the vocabulary is full. Saved as tokenizer.json next to the data.

Every encoding has <|endoftext|> as its one special token (.eot_token), which tiktoken encodes to a
single id and never merges with its neighbours.
"""
import heapq
import json
import os
from collections import Counter, defaultdict
from functools import lru_cache

import regex
import tiktoken

from data import read_meta

EOT = '<|endoftext|>'
# GPT-2's pre-tokenizer (Radford et al. 2019, encoder.py): English contractions, optionally
# space-prefixed runs of letters / of digits / of other symbols, and whitespace, where a run of
# spaces leaves its last space to prefix the next word.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SHARED_DATA = os.environ.get('SHARED_DATA', os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'shared', 'data'))

# -----------------------------------------------------------------------------
# GPT-2


def gpt2_byte_decoder():
    """GPT-2's files spell each byte as a printable character: bytes that already print as a
    Latin-1 character stand for themselves, the other 68 are shifted to chr(256), chr(257), ..."""
    printable = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1), *range(ord('®'), ord('ÿ') + 1)]
    shifted = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + i): b for i, b in enumerate(shifted)})
    return table


def gpt2_files(d):
    """(vocab, merges) paths in directory d, in either naming, or None."""
    for vocab, merges in (('vocab.json', 'merges.txt'), ('encoder.json', 'vocab.bpe')):
        if os.path.isfile(os.path.join(d, vocab)) and os.path.isfile(os.path.join(d, merges)):
            return os.path.join(d, vocab), os.path.join(d, merges)
    return None


@lru_cache(maxsize=4)
def gpt2_from_files(vocab_path, merges_path):
    to_byte = gpt2_byte_decoder()
    try:
        with open(vocab_path, encoding='utf-8') as f:
            vocab = json.load(f)
        with open(merges_path, encoding='utf-8') as f:
            merges = [line.split() for line in f if line.strip() and not line.startswith('#version')]
        ranks = {bytes(to_byte[c] for c in tok): i for tok, i in vocab.items() if tok != EOT}
        eot_id = vocab[EOT]
        # tiktoken ranks a token by its id, so GPT-2's ids must follow its merge order: check that
        # merge i made token 256 + i, which also catches a vocab.json/merges.txt from different models.
        for i, (left, right) in enumerate(merges):
            if ranks.get(bytes(to_byte[c] for c in left + right)) != 256 + i:
                raise ValueError(f'merge {i} ({left} {right}) is not token {256 + i}')
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"GPT-2 files {vocab_path} / {merges_path} are unreadable or don't match "
                         f"({type(e).__name__}: {e}); get both from the same GPT-2 release")
    return tiktoken.Encoding('gpt2', pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={EOT: eot_id}, explicit_n_vocab=len(ranks) + 1)


def load_gpt2(gpt2_dir=None):
    """GPT-2's tiktoken Encoding. Local files first: gpt2_dir, else $GPT2_DIR, then $SHARED_DATA/gpt2
    (vocab.json + merges.txt, or OpenAI's encoder.json + vocab.bpe), so machines without internet work;
    then tiktoken's own copy (its cache, or a download). FileNotFoundError when none of these has it."""
    if gpt2_dir:  # asked for explicitly: don't fall back to anything else
        if not gpt2_files(gpt2_dir):
            raise FileNotFoundError(f"no GPT-2 BPE files in {gpt2_dir}; it needs vocab.json + merges.txt "
                                    "(or encoder.json + vocab.bpe)")
        return gpt2_from_files(*gpt2_files(gpt2_dir))
    tried = [d for d in (os.environ.get('GPT2_DIR'), os.path.join(SHARED_DATA, 'gpt2')) if d]
    for d in tried:
        if gpt2_files(d):
            return gpt2_from_files(*gpt2_files(d))
    try:
        return tiktoken.get_encoding('gpt2')
    except Exception as e:  # no network, a proxy, a damaged cache: say where we looked and what to do
        why = ' '.join(str(e).split())[:120]
        raise FileNotFoundError(f"GPT-2 BPE files not found in {', '.join(tried)}, and tiktoken could not download "
                                f"them ({type(e).__name__}: {why}); put vocab.json + merges.txt in a directory and "
                                "set GPT2_DIR=<dir> (or --gpt2_dir=<dir>)") from None


# -----------------------------------------------------------------------------
# our byte-level BPE: training


PARALLEL_MIN_CHARS = 8_000_000  # count pre-tokens in parallel above this: below, starting processes costs more


def count_pretokens(texts):
    """Counter of GPT-2 pre-tokens (as UTF-8 bytes) over a list of strings; <|endoftext|> is a
    hard boundary. Module-level so that multiprocessing workers can run it."""
    pat = regex.compile(GPT2_PATTERN)
    counts = Counter()
    for text in texts:
        for part in text.split(EOT):
            counts.update(pat.findall(part))
    return Counter({w.encode('utf-8'): n for w, n in counts.items()})


def chunked(texts, chunk_bytes):
    chunk, size = [], 0
    for t in texts:
        chunk.append(t)
        size += len(t)
        if size >= chunk_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def check_vocab_size(vocab_size):
    if vocab_size < 257:
        raise ValueError(f"vocab_size={vocab_size} is too small for a byte-level BPE; it needs 256 byte "
                         "tokens + <|endoftext|>, use at least 257 (e.g. 4096)")


def train_bpe(texts, vocab_size, num_proc=1, progress=True):
    """Learn a byte-level BPE from a list of strings; returns the merges as (left_id, right_id)
    pairs in order, merge i making token 256 + i. vocab_size counts <|endoftext|> too.

    Speed comes from doing the work per distinct pre-token, not per occurrence: the text is cut and
    counted once (on num_proc processes), and after each merge only the pre-tokens that contain the
    merged pair are rewritten, their pair counts adjusted by difference. A heap finds the most frequent
    pair; stale heap entries are skipped when popped. Ties go to the pair whose (left, right) bytes sort
    first, so the same text and vocab_size always give the same merges."""
    check_vocab_size(vocab_size)
    total = sum(len(t) for t in texts)
    if num_proc > 1 and total > PARALLEL_MIN_CHARS:
        import multiprocessing
        # 'spawn': safe even when the caller holds threads (e.g. a `datasets` stream)
        with multiprocessing.get_context('spawn').Pool(num_proc) as pool:
            counts = Counter()
            for c in pool.imap_unordered(count_pretokens, chunked(texts, max(1_000_000, total // (8 * num_proc)))):
                counts.update(c)
    else:
        counts = count_pretokens(texts)

    words = [list(w) for w in counts]            # each distinct pre-token as a list of token ids
    freq = list(counts.values())
    pairs = defaultdict(int)                     # (left, right) -> occurrences in the text
    where = defaultdict(set)                     # (left, right) -> indices of words that (may) contain it
    for i, w in enumerate(words):
        for p in zip(w, w[1:]):
            pairs[p] += freq[i]
            where[p].add(i)
    vocab = [bytes([b]) for b in range(256)]     # token id -> bytes
    token_id = {t: i for i, t in enumerate(vocab)}
    heap = [(-n, vocab[a], vocab[b], a, b) for (a, b), n in pairs.items()]
    heapq.heapify(heap)

    merges = []
    n_merges = vocab_size - 257
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_merges, desc='bpe merges', unit=' merges', mininterval=1.0)
    while len(merges) < n_merges and heap:
        neg, _, _, a, b = heapq.heappop(heap)
        if pairs.get((a, b), 0) != -neg:
            continue  # stale: this pair's count changed after the entry was pushed
        # A new token, unless these bytes already are one (reached through another split): then the
        # words just switch to that token, so each token id stays one distinct byte string.
        new = token_id.get(vocab[a] + vocab[b])
        if new is None:
            new = token_id[vocab[a] + vocab[b]] = len(vocab)
            vocab.append(vocab[a] + vocab[b])
            merges.append((a, b))
            if bar:
                bar.update(1)
        delta = defaultdict(int)
        for i in where.pop((a, b)):
            w = words[i]
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    out.append(new)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            if len(out) == len(w):
                continue  # the index was stale: an earlier merge already consumed this pair here
            f = freq[i]
            for p in zip(w, w[1:]):
                delta[p] -= f
            for p in zip(out, out[1:]):
                delta[p] += f
                where[p].add(i)
            words[i] = out
        for p, d in delta.items():
            if d:
                pairs[p] += d
                if pairs[p] > 0:
                    heapq.heappush(heap, (-pairs[p], vocab[p[0]], vocab[p[1]], *p))
                else:
                    del pairs[p]
        pairs.pop((a, b), None)
    if bar:
        bar.close()
    return merges


# -----------------------------------------------------------------------------
# our byte-level BPE: file format and encoding


def bpe_json(merges):
    """tokenizer.json text: self-describing, one merge per line so that diffs are readable."""
    head = {'type': 'byte-level-bpe', 'version': 1, 'pattern': GPT2_PATTERN,
            'special_tokens': {EOT: 256 + len(merges)},
            'format': 'token ids 0..255 are the bytes 0..255; merges[i] = [left_id, right_id] makes token '
                      '256+i, whose bytes are those of left then right; the rank of a token is its id'}
    lines = ',\n'.join(f'  [{a}, {b}]' for a, b in merges)
    return json.dumps(head, ensure_ascii=False, indent=1)[:-2] + f',\n "merges": [\n{lines}\n ]\n}}\n'


def bpe_from_json(text, where='tokenizer.json'):
    """tiktoken Encoding from tokenizer.json text; where names it in error messages."""
    try:
        d = json.loads(text)
        if d['type'] != 'byte-level-bpe' or d['version'] != 1:
            raise ValueError('not a version-1 byte-level BPE')
        vocab = [bytes([b]) for b in range(256)]
        for a, b in d['merges']:
            vocab.append(vocab[a] + vocab[b])
        special = {str(k): int(v) for k, v in d['special_tokens'].items()}
        if special.get(EOT) != len(vocab):
            raise ValueError(f'{EOT} must have id {len(vocab)}')
        if len(set(vocab)) != len(vocab):
            raise ValueError('two merges make the same token')
        ranks = {t: i for i, t in enumerate(vocab)}
        return tiktoken.Encoding('bpe', pat_str=d['pattern'], mergeable_ranks=ranks, special_tokens=special,
                                 explicit_n_vocab=len(vocab) + len(special))
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ValueError(f"{where} is not a valid tokenizer file ({type(e).__name__}: {e}); "
                         "re-run prepare.py with --force to rebuild it")


# -----------------------------------------------------------------------------
# what other scripts call: the tokenizer of a prepared data directory, or of a checkpoint


def state_from_dir(data_dir):
    """A small plain dict (str/int/None: safe for torch.load(weights_only=True)) that fully describes the
    tokenizer of data_dir; checkpoints store it so that sampling needs no data directory."""
    meta = read_meta(data_dir)
    text = None
    if meta['tokenizer'] == 'bpe':
        path = os.path.join(data_dir, meta.get('tokenizer_file') or 'tokenizer.json')
        try:
            with open(path, encoding='utf-8') as f:
                text = f.read()
        except OSError as e:  # the same kind of OSError (FileNotFoundError, PermissionError...), with what to do
            raise type(e)(f"can't read {path} ({e.strerror}); re-run python prepare.py --out_dir={data_dir} --force") from None
    return {'name': meta['tokenizer'], 'n_vocab': int(meta['vocab_size']), 'eot_id': int(meta['eot_id']), 'json': text}


def from_state(state):
    """tiktoken Encoding from a state_from_dir() dict."""
    try:
        name, n_vocab, eot_id, text = state['name'], state['n_vocab'], state['eot_id'], state['json']
    except (KeyError, TypeError):
        raise ValueError(f"tokenizer state {str(state)[:80]!r} is not from tokenizer.state_from_dir; "
                         "the checkpoint was not written by this repo's train.py") from None
    if name == 'bpe':
        enc = bpe_from_json(text, where='the bpe tokenizer stored in the checkpoint')
    elif name == 'gpt2':
        enc = load_gpt2()
    else:
        raise ValueError(f"unknown tokenizer {name!r} in the checkpoint; expected 'bpe' or 'gpt2'")
    if (enc.n_vocab, enc.eot_token) != (n_vocab, eot_id):
        raise ValueError(f"the {name} tokenizer found has {enc.n_vocab} tokens / eot {enc.eot_token}, but the "
                         f"data was made with {n_vocab} / {eot_id}; point GPT2_DIR at the files used then")
    return enc


def from_checkpoint(ckpt, path):
    """tiktoken Encoding of the tokenizer a train.py checkpoint (a dict, read from path) recorded."""
    if 'tokenizer' not in ckpt:
        raise ValueError(f"{path} records no tokenizer, so its token ids can't be read; use a checkpoint written "
                         "by train.py")
    return from_state(ckpt['tokenizer'])


def check_same(data_dir, state, path):
    """ValueError unless data_dir was tokenized as the data of the checkpoint at path (its tokenizer state)."""
    if state_from_dir(data_dir) != state:
        raise ValueError(f"{data_dir} was tokenized differently from the data {path} was trained on; pass "
                         "--data_dir=<data prepared with the same tokenizer>")


def from_dir(data_dir):
    """tiktoken Encoding of a directory written by prepare.py (reads its meta.json)."""
    meta = read_meta(data_dir)
    if meta['tokenizer'] == 'gpt2':  # the GPT-2 files are not copied into data_dir: find them again
        recorded = (meta.get('args') or {}).get('gpt2_dir')
        return load_gpt2(recorded if recorded and gpt2_files(recorded) else None)
    return from_state(state_from_dir(data_dir))
