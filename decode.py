"""
Decoding: turning a trained GPT into tokens, one step at a time, for sample.py, report.py, bench.py and serve.py.

    for tokens in generate(model, idx, 200, temperature=0.8, top_k=50, eos_id=eot): ...   # (B,) per step
    best = beam_search(model, idx, 200, beam_width=4, eos_id=eot)                        # (1, T + n)

Every token after the prompt costs one decode_step: the new token goes through the model alone, reading the keys
and values of the tokens before it from a KVCache of fixed shape, so the step's shapes never change and
torch.compile builds it once (compile_step; CUDA graphs on a GPU).

References:
 [9] Holtzman et al. 2020, The Curious Case of Neural Text Degeneration (nucleus / top-p sampling)
"""
import torch
import torch.nn.functional as F


class KVCache:
    """One layer's keys and values during generation, in buffers of fixed shape (B, n_kv_head, block_size,
    head_dim), written in place at each token's position: the cache never grows or moves."""

    def __init__(self, block_size):
        self.block_size, self.k, self.v = block_size, None, None

    def allocate(self, batch, n_kv_head, head_dim, dtype, device):
        """Buffers for `batch` rows; update() calls it on first use, a Batch calls it for all its rows at once."""
        shape = (batch, n_kv_head, self.block_size, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # zeros, not empty: 0 * NaN would poison softmax
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        for buffer in (self.k, self.v):  # so CUDA graphs of the compiled step read them in place, uncopied
            torch._dynamo.mark_static_address(buffer)

    def update(self, k, v, positions):
        """Write k, v (B, n_kv_head, T, hd) of tokens at positions (T,) or (B, T); returns the whole buffers."""
        B = k.size(0)
        if self.k is None:  # allocated on first use so dtype/device follow the activations (autocast included)
            self.allocate(B, k.size(1), k.size(3), k.dtype, k.device)
        rows = torch.arange(B, device=k.device)[:, None]  # (B, 1): row b writes its own positions
        self.k[rows, :, positions.expand(B, -1)] = k.transpose(1, 2)  # indexed dims first: (B, T, n_kv_head, hd)
        self.v[rows, :, positions.expand(B, -1)] = v.transpose(1, 2)
        return self.k, self.v

    def view(self, start, stop=None):
        """Rows start..stop-1 (default: row start alone) of this allocated cache, sharing its buffers: a request
        joining a batch that is already decoding fills its own row, and the step then reads every row in place."""
        stop = start + 1 if stop is None else stop
        part = KVCache(self.block_size)
        part.k, part.v = self.k[start:stop], self.v[start:stop]
        for buffer in (part.k, part.v):  # a compiled step given this view reads it in place too
            torch._dynamo.mark_static_address(buffer)
        return part

    def move(self, src, dst, length):
        """Copy row src's first `length` slots to row dst (a Batch closing the gap a finished sequence left)."""
        self.k[dst, :, :length] = self.k[src, :, :length]
        self.v[dst, :, :length] = self.v[src, :, :length]

    def reorder(self, rows):
        """Make row i hold what row rows[i] held (beam search follows each surviving beam's parent)."""
        self.k.copy_(self.k.index_select(0, rows))
        self.v.copy_(self.v.index_select(0, rows))


def decode_step(model, tokens, positions, caches):
    """Logits (B, V) of the token after tokens (B,): each row's new token at its position, positions (B,), its
    predecessors' keys and values in caches (one KVCache per block). It always reads all block_size cache slots
    (the mask hides those past each position), so every call has the same shapes."""
    return model.logits(model.trunk(tokens[:, None], positions[:, None], caches)[:, -1])


def compile_step(model, backend='inductor'):
    """decode_step (same arguments) for this model, torch.compile'd over its fixed shapes (once per batch size). On CUDA the step is
    recorded as a CUDA graph (mode='reduce-overhead') and replayed for every token, which removes the kernel
    launches that dominate batch-1 decoding of a small model; on a CPU the step's fused kernels are called from
    generated C++ (cpp_wrapper) instead of Python. Call it after moving the model to its device and dtype."""
    kw = {}
    if backend == 'inductor':
        kw = dict(mode='reduce-overhead') if model.lm_head.weight.is_cuda else dict(options={'cpp_wrapper': True})
    return torch.compile(decode_step, backend=backend, fullgraph=True, dynamic=False, **kw)


def transpose_weights(model):
    """Store every matrix of the model transposed in memory: each weight keeps its shape (out, in) and name, but
    its elements lie column by column, so F.linear reads W.t() as a contiguous (in, out) matrix. A one-token step
    multiplies one row by each matrix: BLAS streams a contiguous (in, out) matrix with wide multiply-adds across
    the outputs, where a row-major (out, in) one needs a short dot product per output (README's decoding table has
    the figures). Call it once, after the model has its device and dtype, on a model that only decodes."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and not module.weight.stride(0) == 1:
            module.weight.data = module.weight.data.t().contiguous().t()  # a tied embedding follows: same tensor
    return model


CORES = torch.get_num_threads()  # torch's default thread count, read before anyone changes it


def threads_for(rows, threads=0):
    """CPU threads for decoding `rows` rows at once: `threads` if given; else 1 for a single row, whose
    matrix-vector products are too small for a second thread to pay for the hand-off between them (README's
    decoding table), and every core for a batch, whose matrix products split well."""
    return threads or (1 if rows == 1 else CORES)


class Window:
    """What generation feeds the model, stepped the same way by generate and by beam_search: each row's sequence
    so far, the window of its newest (at most block_size) tokens that the model reads, and those tokens' cached
    keys and values. logits() -> (B, V) for the next token; push() appends one.

    Past block_size the window slides: once it would exceed block_size tokens, it restarts from the newest
    block_size//2 tokens at position 0 and the cache is refilled from them. Cost: one forward over block_size//2
    tokens per block_size//2 new tokens (about one extra token of batched compute per token), and each token then
    sees between block_size//2 and block_size tokens of context instead of always a full block. The refill is
    needed because positions count from the window start and the kept tokens' keys were computed while the
    dropped tokens were visible. use_cache=False recomputes the very same windows from scratch every step, so
    both modes produce identical tokens."""

    def __init__(self, model, idx, use_cache=True, step=decode_step):
        self.model, self.block_size, self.step = model, model.config.block_size, step
        self.seq, self.start = idx, max(0, idx.size(1) - self.block_size)  # (B, T); the window is seq[:, start:]
        self.caches = [KVCache(self.block_size) for _ in model.blocks] if use_cache else None
        self.cached = False  # whether the cache holds every window token but the newest

    @torch.no_grad()
    def logits(self):
        window = self.seq[:, self.start:]
        B, T = window.shape
        if self.cached:  # only the newest token goes through the model
            return self.step(self.model, self.newest, torch.full((B,), T - 1, device=window.device), self.caches)
        positions = torch.arange(T, device=window.device)  # (re)fill the cache from the whole window, or no cache
        self.cached = self.caches is not None
        return self.model.logits(self.model.trunk(window, positions, self.caches)[:, -1])

    def push(self, tokens, rows=None):
        """Append tokens (B,) to the rows. rows (B,), given first, makes row i continue what row rows[i] held
        (beam search follows each surviving beam's parent)."""
        if rows is not None:
            self.seq = self.seq[rows]
            for cache in self.caches or []:
                cache.reorder(rows)
        self.seq, self.newest = torch.cat((self.seq, tokens[:, None]), dim=1), tokens
        if self.seq.size(1) - self.start > self.block_size:  # slide, and refill the cache next time
            self.start, self.cached = self.seq.size(1) - max(1, self.block_size // 2), False


def check_sampling(temperature=1.0, top_k=None, top_p=None):
    """A one-line ValueError for sampling settings that mean nothing (every caller's check, kept here once)."""
    for broken, message in ((not temperature >= 0, f'temperature={temperature} must be 0 (greedy) or more'),
                            (top_k is not None and top_k < 1, f'top_k={top_k} must be at least 1 (or off)'),
                            (top_p is not None and not 0 < top_p <= 1, f'top_p={top_p} must lie in (0, 1] (or off)')):
        if broken:
            raise ValueError(message)


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Pick the next token from logits (B, V) -> (B,). temperature 0 is greedy (argmax). generator: one
    torch.Generator for every row, or a list with one per row (a row's draw then ignores the other rows)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float('-inf'))
    if top_p is not None and top_p < 1.0:  # [9]: the smallest set of tokens holding probability >= top_p
        # The nucleus is usually a few dozen tokens: sort only the 64 likeliest (topk), and the whole vocabulary
        # only when some row's nucleus is bigger (a full sort of 32k tokens costs milliseconds per token).
        probs = logits.softmax(dim=-1)
        for k in (min(64, logits.size(-1)), logits.size(-1)):
            top, order = probs.topk(k, dim=-1)  # (B, k), likeliest first
            before = top.cumsum(dim=-1) - top  # mass of the strictly likelier tokens: exactly 0 for the top one
            if bool((before[:, -1] >= top_p).all()):  # the k-th token is out, so every row's nucleus is in
                break
        drop = torch.ones_like(logits, dtype=torch.bool).scatter(-1, order, before >= top_p)
        logits = logits.masked_fill(drop, float('-inf'))
    # inverse-CDF draw, one uniform number per row: 8x faster than torch.multinomial over an 8k vocabulary on
    # CPU. u stays strictly below the total, so the chosen token (first with cdf > u) has probability > 0.
    cdf = logits.softmax(dim=-1).cumsum(dim=-1)  # (B, V)
    total = cdf[:, -1:]
    if isinstance(generator, (list, tuple)):
        if len(generator) != len(logits):
            raise ValueError(f'{len(generator)} generators for {len(logits)} rows; give one per row, or one for all')
        u = torch.cat([torch.rand(1, generator=g, device=cdf.device) for g in generator])[:, None]
    else:
        u = torch.rand(total.shape, generator=generator, device=cdf.device)
    u = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, u, right=True).squeeze(-1)


@torch.no_grad()
def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, eos_id=None, use_cache=True,
             generator=None, step=decode_step):
    """Continue every row of idx (B, T): yield the next token of each row, a LongTensor (B,), step by step, at
    most max_new_tokens times; temperature 0 is greedy. Rows that produced eos_id keep producing it; the stream
    ends once every row has. generator: one torch.Generator for all rows, or a list with one per row (then a
    row's random draws do not depend on the other rows). step: decode_step, or compile_step(model)'s.
    The whole continuation: torch.cat([idx, torch.stack(list(generate(...)), 1)], 1). Call model.eval() first."""
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError(f'prompt must be (B, T) with T >= 1, got {tuple(idx.shape)}; start from at least one '
                         'token, e.g. <|endoftext|>')
    if max_new_tokens < 0:
        raise ValueError(f'max_new_tokens={max_new_tokens} is negative; use 0 or more')
    check_sampling(temperature, top_k, top_p)
    window = Window(model, idx, use_cache, step)
    done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        nxt = sample_next(window.logits(), temperature, top_k, top_p, generator)  # (B,)
        if eos_id is not None:
            nxt = nxt.masked_fill(done, eos_id)
            done |= nxt == eos_id
        window.push(nxt)
        yield nxt
        if eos_id is not None and bool(done.all()):
            return


def sample_rows(logits, settings, generators):
    """sample_next for rows with settings of their own: logits (B, V), settings a list of B (temperature, top_k,
    top_p) and generators a list of B -> a list of B tokens. Rows that share settings are drawn together."""
    groups = {}
    for i, s in enumerate(settings):
        groups.setdefault(s, []).append(i)
    out = [0] * len(settings)
    for s, rows in groups.items():
        part = logits if len(rows) == len(settings) else logits[rows]
        for i, t in zip(rows, sample_next(part, *s, generator=[generators[i] for i in rows]).tolist()):
            out[i] = t
    return out


class Sequence:
    """One sequence in a Batch: the tokens of its window (the newest last), its sampling settings (temperature,
    top_k, top_p), its generator and its row in the batch."""

    def __init__(self, window, sampling, generator, row):
        self.window, self.sampling, self.generator, self.row = window, sampling, generator, row


class Batch:
    """Sequences decoded together in the rows of one static KV cache (continuous batching, as serve.py runs it):
    each at its own position, with its own sampling settings and generator, joining (add) and leaving (remove)
    between steps; step() gives every sequence its next token.

    The sequences hold rows 0..n-1, so a step reads n rows; one that leaves hands its row to the last sequence
    (a copy of that row's cached slots). A sequence reads the windows Window gives generate (sliding the same way
    past block_size), so a sequence decoded here, greedily or with its own generator, gets the tokens generate
    gives it alone, up to rounding (a batch's matrix products may round differently from one row's).
    sizes: the batch sizes a step may run at (a compiled step compiles once per size): n sequences are padded with
    idle rows up to the smallest size >= n. None runs exactly n rows (an eager step)."""

    def __init__(self, model, max_rows, step=decode_step, sizes=None):
        c, w = model.config, model.lm_head.weight
        if max_rows < 1:
            raise ValueError(f'max_rows={max_rows} must be at least 1')
        self.model, self.block_size, self.max_rows, self.step_fn = model, c.block_size, max_rows, step
        self.sizes = sorted({s for s in sizes or () if s < max_rows} | {max_rows}) if sizes else None
        self.caches = [KVCache(c.block_size) for _ in model.blocks]
        for cache in self.caches:
            cache.allocate(max_rows, c.n_kv_head or c.n_head, c.head_dim, w.dtype, w.device)
        self.views = {}  # batch size -> the caches' first rows, made once so a compiled step sees the same tensors
        self.seqs = []  # the sequence in each row

    def add(self, ids, temperature=1.0, top_k=None, top_p=None, generator=None):
        """Start a sequence from the token ids (a list, at least one) in the next free row -> its Sequence. Its
        tokens but the newest go through the model now; the newest goes through the next step."""
        check_sampling(temperature, top_k, top_p)
        if len(self.seqs) == self.max_rows:
            raise ValueError(f'all {self.max_rows} rows are decoding; remove a sequence before adding one')
        if not ids:
            raise ValueError('a sequence starts from at least one token, e.g. <|endoftext|>')
        sampling = (temperature, top_k, top_p) if temperature else (0, None, None)  # greedy ignores top_k/top_p
        seq = Sequence(list(ids[-self.block_size:]), sampling, generator, len(self.seqs))  # as Window keeps them
        self.seqs.append(seq)
        self.fill(seq)
        return seq

    def remove(self, seq):
        """End a sequence between steps: its row goes to the last sequence, so the rows stay 0..n-1."""
        last = self.seqs.pop()
        if last is not seq:
            for cache in self.caches:
                cache.move(last.row, seq.row, len(last.window) - 1)  # the slots that row has filled
            last.row = seq.row
            self.seqs[seq.row] = last

    @torch.no_grad()
    def fill(self, seq):
        """Cache the keys and values of the sequence's window but its newest token, in its own row."""
        n = len(seq.window) - 1
        if n:
            device = self.model.lm_head.weight.device
            self.model.trunk(torch.tensor([seq.window[:-1]], device=device), torch.arange(n, device=device),
                             [cache.view(seq.row) for cache in self.caches])

    @torch.no_grad()
    def step(self):
        """The next token of every sequence, a list in row order (each is also appended to its sequence's window)."""
        if not self.seqs:
            return []
        for seq in self.seqs:
            if len(seq.window) > self.block_size:  # slide as Window does, and refill the row
                seq.window = seq.window[-max(1, self.block_size // 2):]
                self.fill(seq)
        n = len(self.seqs)
        B = n if self.sizes is None else next(s for s in self.sizes if s >= n)
        if B not in self.views:
            self.views[B] = [cache.view(0, B) for cache in self.caches]
        device = self.model.lm_head.weight.device
        tokens = torch.tensor([s.window[-1] for s in self.seqs] + [0] * (B - n), device=device)
        # idle rows (position 0) write slot 0 of free rows, which a sequence added there overwrites before reading
        positions = torch.tensor([len(s.window) - 1 for s in self.seqs] + [0] * (B - n), device=device)
        logits = self.step_fn(self.model, tokens, positions, self.views[B])[:n]
        nxt = sample_rows(logits, [s.sampling for s in self.seqs], [s.generator for s in self.seqs])
        for seq, t in zip(self.seqs, nxt):
            seq.window.append(t)
        return nxt


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
