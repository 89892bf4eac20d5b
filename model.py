"""
A GPT language model in one file. GPTConfig picks every architecture the project's seeds use:
positions (learned / sinusoidal / rotary / none), normalisation (LayerNorm / RMSNorm / none, pre or post),
MLP activation (GELU / ReLU / squared ReLU / SiLU / SwiGLU / GeGLU), grouped-query attention and weight tying;
and the speed-run switches, all off by default: QK-norm, zero-initialised output projections, logit soft-capping.
Generation reuses a pre-allocated key/value cache.

References (cited below by number):
 [1] Vaswani et al. 2017, Attention Is All You Need (sinusoids, post-norm, ReLU MLP, label smoothing)
 [2] Radford et al. 2019, Language Models are Unsupervised Multitask Learners (GPT-2: learned positions,
     pre-norm, residual projections initialised with std 0.02/sqrt(2*n_layer))
 [3] Press & Wolf 2017, Using the Output Embedding to Improve Language Models (weight tying)
 [4] Su et al. 2021, RoFormer: Enhanced Transformer with Rotary Position Embedding
 [5] Zhang & Sennrich 2019, Root Mean Square Layer Normalization
 [6] Shazeer 2020, GLU Variants Improve Transformer (SwiGLU/GeGLU; 8/3 hidden keeps parameters equal)
 [7] Shazeer 2019, Fast Transformer Decoding (multi-query); Ainslie et al. 2023, GQA
 [8] Kazemnejad et al. 2023, The Impact of Positional Encoding on Length Generalization (NoPE)
 [9] Holtzman et al. 2020, The Curious Case of Neural Text Degeneration (nucleus / top-p sampling)
[10] Chowdhery et al. 2022, PaLM, appendix B (training FLOPs per token, MFU)
[11] Henry et al. 2020, Query-Key Normalization for Transformers; Dehghani et al. 2023, Scaling Vision Transformers
     to 22 Billion Parameters (QK-norm: normalised queries and keys keep attention logits from growing unbounded)
[12] So et al. 2021, Primer: Searching for Efficient Transformers for Language Modeling (squared ReLU)
[13] Gemma Team 2024, Gemma 2 (final-logit soft-capping); Jordan et al. 2024, modded-nanogpt (its speed-run use)
[14] Zhang et al. 2019, Fixup Initialization; Jordan et al. 2024, modded-nanogpt (zero-initialised projections)
"""
import math
import os
import re
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
from torch.nn import functional as F

POS = ('learned', 'sinusoidal', 'rope', 'none')
NORMS = ('layernorm', 'rmsnorm', 'none')
NORM_POS = ('pre', 'post')
ACTS = ('gelu', 'relu', 'relu2', 'silu', 'swiglu', 'geglu')
GATED = ('swiglu', 'geglu')
# fused attention kernels (flash / memory-efficient) when this torch has them; the manual path is the fallback
FLASH = hasattr(F, 'scaled_dot_product_attention')


@dataclass
class GPTConfig:
    vocab_size: int = 8192
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_kv_head: int | None = None    # None -> n_head; fewer -> grouped-query, 1 -> multi-query attention [7]
    n_embd: int = 288
    mlp_hidden: int | None = None   # None -> 4*n_embd, or for gated MLPs 8/3*n_embd rounded down to a multiple of 64
    dropout: float = 0.0
    bias: bool = False
    pos: str = 'rope'               # 'learned' | 'sinusoidal' | 'rope' | 'none'
    rope_theta: float = 10000.0
    norm: str = 'rmsnorm'           # 'layernorm' | 'rmsnorm' | 'none'
    norm_pos: str = 'pre'           # 'pre' | 'post'
    act: str = 'swiglu'             # 'gelu' | 'relu' | 'relu2' (squared ReLU [12]) | 'silu' | 'swiglu' | 'geglu'
    tie_weights: bool = True
    label_smoothing: float = 0.0    # applied to the training loss only; eval losses stay plain cross-entropy
    qk_norm: bool = False           # RMSNorm (with gains) of each head's queries and keys, before RoPE [11]
    zero_init: bool = False         # residual output projections start at 0: pre-norm blocks start as identity [14]
    logit_softcap: float = 0.0      # c > 0: logits = c * tanh(logits / c), smoothly kept inside (-c, c) [13]; 0 = off

    def __post_init__(self):
        def bad(what, fix):
            raise ValueError(f'model config: {what}; {fix}')
        for f in fields(self):  # values arrive from command lines and checkpoints, so check their types here
            v = getattr(self, f.name)
            if v is None and f.default is None:
                continue
            want = int if f.default is None else {int: int, float: (int, float), bool: bool, str: str}[type(f.default)]
            if isinstance(v, bool) != (want is bool) or not isinstance(v, want):
                kind = 'an int' if want is int else 'a ' + type(f.default).__name__
                bad(f'{f.name}={v!r} has the wrong type', f'give {kind}')
        for name, allowed in (('pos', POS), ('norm', NORMS), ('norm_pos', NORM_POS), ('act', ACTS)):
            if getattr(self, name) not in allowed:
                bad(f'{name}={getattr(self, name)!r} is unknown', f'use one of {", ".join(allowed)}')
        for name in ('vocab_size', 'block_size', 'n_layer', 'n_head', 'n_embd'):
            if getattr(self, name) < 1:
                bad(f'{name}={getattr(self, name)} must be positive', f'set --{name} to at least 1')
        if self.n_embd % self.n_head:
            bad(f'n_embd={self.n_embd} is not divisible by n_head={self.n_head}', 'pick n_embd a multiple of n_head')
        if self.n_kv_head is not None and (self.n_kv_head < 1 or self.n_head % self.n_kv_head):
            bad(f'n_kv_head={self.n_kv_head} must divide n_head={self.n_head}', 'use a divisor of n_head (or None)')
        if self.pos == 'rope' and self.head_dim % 2:
            bad(f'rope needs an even head size, got n_embd/n_head={self.head_dim}', 'change n_embd or n_head')
        if self.pos == 'sinusoidal' and self.n_embd % 2:
            bad(f'sinusoidal positions need an even n_embd, got {self.n_embd}', 'use an even n_embd')
        if self.mlp_hidden is not None and self.mlp_hidden < 1:
            bad(f'mlp_hidden={self.mlp_hidden} must be positive', 'set it to at least 1, or None for the default')
        if not 0 <= self.dropout < 1 or not 0 <= self.label_smoothing < 1:
            bad('dropout and label_smoothing must lie in [0, 1)', 'e.g. --dropout=0.1 --label_smoothing=0.1')
        if self.rope_theta <= 0:
            bad(f'rope_theta={self.rope_theta} must be positive', 'the usual value is 10000')
        if self.logit_softcap < 0:
            bad(f'logit_softcap={self.logit_softcap} must not be negative', 'use 0 (off) or a cap such as 15')

    @property
    def head_dim(self):
        return self.n_embd // self.n_head

    @property
    def mlp_width(self):  # the setting mlp_hidden, or its default
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        if self.act in GATED:  # a gated MLP has three matrices, so 8/3*C matches the two 4*C matrices of [2] [6]
            return max(64, int(8 * self.n_embd / 3) // 64 * 64)
        return 4 * self.n_embd

    @property
    def padded_vocab(self):  # multiples of 64 suit matmul tiles; the extra rows are never emitted
        return -(-self.vocab_size // 64) * 64

    def to_dict(self):
        return asdict(self)

    # fields added after the first release, with the values that mean "as before": older checkpoints lack them
    LATER = {'qk_norm': False, 'zero_init': False, 'logit_softcap': 0.0}

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise ValueError(f'model config is {type(d).__name__}, not a dict of GPTConfig fields; '
                             'it was not written by train.py')
        names = {f.name for f in fields(cls)}
        d = {**{k: v for k, v in cls.LATER.items() if k not in d}, **d}  # a checkpoint from before they existed
        unknown, missing = sorted(set(d) - names), sorted(names - set(d))
        if unknown:
            raise ValueError(f'model config has unknown fields {unknown}; '
                             'it comes from another model.py version, update model.py')
        if missing:
            raise ValueError(f'model config lacks fields {missing}; '
                             'it comes from an older model.py, add them to the checkpoint\'s model_args')
        return cls(**d)


class Norm(nn.Module):
    """LayerNorm, or RMSNorm [5], which skips the mean subtraction and the bias: cheaper, trains as well."""

    def __init__(self, kind, dim, bias):
        super().__init__()
        self.kind = kind
        self.eps = 1e-5 if kind == 'layernorm' else 1e-6  # added to the variance; export.py copies it into HF configs
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias and kind == 'layernorm' else None

    def forward(self, x):
        if self.kind == 'layernorm':
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
        # x / sqrt(mean(x^2) + eps) * gain [5], in fp32 even under autocast; one call rather than five small ops
        return F.rms_norm(x.float(), self.weight.shape, eps=self.eps).type_as(x) * self.weight


def make_norm(config):
    return nn.Identity() if config.norm == 'none' else Norm(config.norm, config.n_embd, config.bias)


def rope_tables(head_dim, block_size, theta):
    """The rotation angles' cos and sin [4] as apply_rope uses them, each (block_size, 1, head_dim): position p
    turns pair i by p * theta^(-2i/head_dim). Pair i is dimensions i and i + head_dim/2, so each half holds every
    angle once, and sin carries the rotation's sign: -sin in the first half, +sin in the second. The 1 broadcasts
    over heads."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(block_size, dtype=torch.float64), inv_freq)[:, None, :]
    return torch.cat((angles.cos(), angles.cos()), -1).float(), torch.cat((-angles.sin(), angles.sin()), -1).float()


def apply_rope(x, cos, sin):
    """Rotate x (B, T, H, hd) by the angles of its positions, cos/sin (T, 1, hd) from rope_tables. Dimension i is
    paired with i + hd/2 (not 2i with 2i+1): the same rotation as [4] in a permuted basis, with no strided
    indexing: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), where rolling x by hd/2 swaps the halves."""
    xf = x.float()  # rotate in fp32 even under autocast: angles need the precision
    return (xf * cos + xf.roll(x.size(-1) // 2, dims=-1) * sin).type_as(x)


def sinusoid_table(block_size, dim):
    """The fixed positional encoding of [1] section 3.5, (block_size, dim): sin on even, cos on odd channels."""
    angles = torch.outer(torch.arange(block_size, dtype=torch.float64),
                         10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    table = torch.zeros(block_size, dim, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = angles.sin(), angles.cos()
    return table.float()


def causal_mask(positions, size):
    """The additive attention mask (T, size) of queries at window positions (T,) over key slots 0..size-1: 0 where
    the slot is at or before the query's position, -inf after it (a later token, or a cache slot not written for
    this window), so softmax gives those exact zeros. Additive rather than boolean because SDPA converts boolean
    masks on every call. Built from positions when a forward needs one, instead of a (block_size, block_size)
    buffer in every layer that the training path (SDPA's is_causal) never reads."""
    slots = torch.arange(size, device=positions.device)
    return torch.zeros(len(positions), size, device=positions.device).masked_fill(slots > positions[:, None],
                                                                                   float('-inf'))


class KVCache:
    """One layer's keys and values during generation, in buffers of fixed shape (B, n_kv_head, block_size,
    head_dim) written in place at each token's window position: the cache never grows or moves."""

    def __init__(self, block_size):
        self.block_size, self.k, self.v = block_size, None, None

    def update(self, k, v, positions):
        # k, v (B, n_kv_head, T, hd) for the window positions (T,); returns the whole buffers
        if self.k is None:  # allocated on first use so dtype/device follow the activations (autocast included)
            shape = (k.size(0), k.size(1), self.block_size, k.size(3))
            self.k, self.v = k.new_zeros(shape), v.new_zeros(shape)  # zeros, not empty: 0 * NaN would poison softmax
            for buffer in (self.k, self.v):  # so CUDA graphs of the compiled step read them in place, uncopied
                torch._dynamo.mark_static_address(buffer)
        self.k.index_copy_(2, positions, k)
        self.v.index_copy_(2, positions, v)
        return self.k, self.v

    def reorder(self, rows):
        """Make row i hold what row rows[i] held (beam search follows each surviving beam's parent)."""
        self.k.copy_(self.k.index_select(0, rows))
        self.v.copy_(self.v.index_select(0, rows))


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_kv_head, self.hd = config.n_head, config.n_kv_head or config.n_head, config.head_dim
        # one matmul for queries (n_head heads) and keys/values (n_kv_head heads each) [7]
        self.qkv = nn.Linear(config.n_embd, (self.n_head + 2 * self.n_kv_head) * self.hd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.proj.residual = True  # gets the scaled init of [2]
        self.dropout = config.dropout
        self.attn_drop, self.resid_drop = nn.Dropout(config.dropout), nn.Dropout(config.dropout)
        # [11]: unit-RMS queries and keys bound every score by sqrt(head_dim) x the gains: softmax cannot saturate
        self.q_norm, self.k_norm = (Norm('rmsnorm', self.hd, False), Norm('rmsnorm', self.hd, False)) \
            if config.qk_norm else (None, None)
        self.flash = FLASH

    def forward(self, x, positions, rope=None, mask=None, cache=None, maps=None):
        """x (B, T, C) at window positions (T,). mask None: the T tokens attend causally among themselves;
        with a cache, mask (T, S) says which of the cache's first S slots each token reads."""
        B, T, C = x.shape
        nh, nkv = self.n_head, self.n_kv_head
        qkv = self.qkv(x).view(B, T, nh + 2 * nkv, self.hd)  # query heads, key heads, value heads
        qk, v = qkv.split([nh + nkv, nkv], dim=2)
        if self.q_norm is not None:
            q, k = qk.split([nh, nkv], dim=2)
            qk = torch.cat((self.q_norm(q), self.k_norm(k)), dim=2)
        if rope is not None:  # [4]: rotating q and k makes q.k depend only on their distance; both in one call
            qk = apply_rope(qk, *rope)
        q, k = qk.split([nh, nkv], dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, T, hd), (B, nkv, T, hd) x2
        if cache is not None:
            k, v = cache.update(k, v, positions)
            k, v = k[:, :, :mask.size(1)], v[:, :, :mask.size(1)]  # (B, nkv, S, hd): the slots the mask covers
        if mask is not None:
            mask = mask.to(q.dtype)  # SDPA wants the mask in the query's dtype (autocast)
        if self.flash and maps is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                               dropout_p=self.dropout if self.training else 0.0,
                                               enable_gqa=nkv != nh)  # (B, nh, T, hd)
        else:
            if nkv != nh:  # each group of n_head/n_kv_head query heads shares one key/value head
                k, v = k.repeat_interleave(nh // nkv, dim=1), v.repeat_interleave(nh // nkv, dim=1)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.hd))  # (B, nh, T, S)
            mask = causal_mask(positions, T).to(q.dtype) if mask is None else mask
            att = (att + mask).softmax(dim=-1)  # exp(-inf) = 0: exact zeros
            if maps is not None:
                maps.append(att)
            y = self.attn_drop(att) @ v  # (B, nh, T, hd)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.act, h = config.act, config.mlp_width
        self.gated = config.act in GATED
        # a gated MLP [6] computes value and gate with one matmul of twice the width
        self.up = nn.Linear(config.n_embd, 2 * h if self.gated else h, bias=config.bias)
        self.down = nn.Linear(h, config.n_embd, bias=config.bias)
        self.down.residual = True
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x):
        h = self.up(x)  # (B, T, h) or (B, T, 2h)
        if self.gated:
            value, gate = h.chunk(2, dim=-1)
            h = value * (F.silu(gate) if self.act == 'swiglu' else F.gelu(gate))
        else:
            h = {'gelu': F.gelu, 'relu': F.relu, 'relu2': lambda t: F.relu(t).square(), 'silu': F.silu}[self.act](h)
        return self.drop(self.down(h))  # (B, T, C)


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.post = config.norm_pos == 'post'
        self.norm1, self.attn = make_norm(config), CausalSelfAttention(config)
        self.norm2, self.mlp = make_norm(config), MLP(config)

    def forward(self, x, positions, rope=None, mask=None, cache=None, maps=None):
        if self.post:  # [1]: normalise each residual sum
            x = self.norm1(x + self.attn(x, positions, rope, mask, cache, maps))
            return self.norm2(x + self.mlp(x))
        # [2]: normalise each sub-layer's input, leaving a clean identity path through the residual stream
        x = x + self.attn(self.norm1(x), positions, rope, mask, cache, maps)
        return x + self.mlp(self.norm2(x))


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


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = c = config
        self.wte = nn.Embedding(c.padded_vocab, c.n_embd)
        if c.pos == 'learned':
            self.wpe = nn.Embedding(c.block_size, c.n_embd)
        elif c.pos == 'sinusoidal':
            self.register_buffer('sinusoid', sinusoid_table(c.block_size, c.n_embd), persistent=False)
        elif c.pos == 'rope':
            cos, sin = rope_tables(c.head_dim, c.block_size, c.rope_theta)
            self.register_buffer('rope_cos', cos, persistent=False)
            self.register_buffer('rope_sin', sin, persistent=False)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        # post-norm blocks already end in a norm, so only pre-norm needs a final one [2]
        self.norm_f = make_norm(c) if c.norm_pos == 'pre' else nn.Identity()
        self.lm_head = nn.Linear(c.n_embd, c.padded_vocab, bias=False)
        if c.tie_weights:  # [3]: one matrix both reads and writes tokens; fewer parameters, better perplexity
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            # [2]: each residual projection adds to the stream 2*n_layer times, so shrink its init to keep
            # the stream's variance independent of depth
            std = 0.02 / math.sqrt(2 * self.config.n_layer) if getattr(m, 'residual', False) else 0.02
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if getattr(m, 'residual', False) and self.config.zero_init:  # [14]: every block starts as the identity
                nn.init.zeros_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def _trunk(self, idx, positions, mask=None, caches=None, maps=None):
        """Final hidden states (B, T, C) of tokens idx (B, T) sitting at window positions (T,); mask and caches
        as CausalSelfAttention takes them."""
        c = self.config
        x = self.wte(idx)  # (B, T, C)
        if c.pos == 'sinusoidal':  # [1] 3.4: scale embeddings by sqrt(C) so the unit-size sinusoids do not drown them
            x = x * math.sqrt(c.n_embd) + self.sinusoid[positions]
        elif c.pos == 'learned':
            x = x + self.wpe(positions)
        # (pos='none' adds nothing: a causal decoder can still infer order from what each token may see [8])
        rope = (self.rope_cos[positions], self.rope_sin[positions]) if c.pos == 'rope' else None
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, positions, rope, mask, caches[i] if caches else None, maps)
        return self.norm_f(x)

    def _logits(self, x, padded=False):
        """Logits (..., vocab_size) of hidden states x (..., C). padded=False multiplies by only the vocab_size rows
        of the output matrix that can be emitted (a decoding step is bound by reading the weights); training
        multiplies by the whole padded matrix (its aligned shape suits matmul tiles) and drops the padded ids."""
        V, c = self.config.vocab_size, self.config.logit_softcap
        logits = F.linear(x, self.lm_head.weight if padded else self.lm_head.weight[:V])[..., :V]
        return c * torch.tanh(logits.float() / c) if c else logits  # [13]: a smooth clip into (-c, c)

    def forward(self, idx, targets=None):
        T = idx.size(1)
        if T > self.config.block_size:
            raise ValueError(f'sequence of {T} tokens is longer than block_size={self.config.block_size}; crop the input')
        x = self._trunk(idx, torch.arange(T, device=idx.device))
        if targets is None:  # inference needs only the last position: skip the (T, vocab) matmul
            return self._logits(x[:, [-1]]), None  # (B, 1, V)
        logits = self._logits(x, padded=True)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                               label_smoothing=self.config.label_smoothing if self.training else 0.0)  # [1] 5.4
        return logits, loss

    @torch.no_grad()
    def attention_maps(self, idx):
        """Softmax attention weights of every layer, a list of (B, n_head, T, T), computed by the manual path."""
        maps = []
        self._trunk(idx, torch.arange(idx.size(1), device=idx.device), maps=maps)
        return maps

    def num_params(self, non_embedding=False):
        """Parameters the model uses: the padding rows of the vocabulary are left out. non_embedding=True also
        leaves out tables that are only looked up (position embeddings; the token embedding when untied). A tied
        token embedding stays in, because it is the output matmul too (the count 6N FLOPs/token needs [10])."""
        c = self.config
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a tied matrix once
        n -= (c.padded_vocab - c.vocab_size) * c.n_embd * (1 if c.tie_weights else 2)
        if non_embedding:
            n -= self.wpe.weight.numel() if c.pos == 'learned' else 0
            n -= 0 if c.tie_weights else c.vocab_size * c.n_embd
        return n

    def flops_per_token(self):
        """Training FLOPs (forward + backward) per token at full context [10]: 6 per matmul weight, plus
        attention's scores and weighted sums, 12 * n_layer * block_size * n_embd."""
        c = self.config
        return 6 * self.num_params(non_embedding=True) + 12 * c.n_layer * c.block_size * c.n_embd

    def decode_step(self, tokens, positions, caches):
        """Logits (B, V) of the token after tokens (B,): one new token per row, at window position positions (1,),
        whose predecessors' keys and values are in caches. It always reads all block_size cache slots (the mask
        hides those past the position), so every call has the same shapes: torch.compile builds it once
        (compile_decoding) and CUDA graphs can replay it."""
        mask = causal_mask(positions, self.config.block_size)  # (1, block_size), built once for all layers
        return self._logits(self._trunk(tokens[:, None], positions, mask, caches)[:, -1])

    def compile_decoding(self, backend='inductor'):
        """Replace decode_step by its torch.compile'd version; its fixed shapes compile once per batch size. On CUDA
        the step is recorded as a CUDA graph (mode='reduce-overhead') and replayed for every token, which removes
        the kernel launches that dominate batch-1 decoding of a small model; on a CPU the step's fused kernels are
        called from generated C++ (cpp_wrapper) instead of Python. Call it after moving the model to its device."""
        kw = {}
        if backend == 'inductor':
            kw = dict(mode='reduce-overhead') if self.lm_head.weight.is_cuda else dict(options={'cpp_wrapper': True})
        self.decode_step = torch.compile(self.decode_step, backend=backend, fullgraph=True, dynamic=False, **kw)

    @torch.no_grad()
    def generate_stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, eos_id=None,
                        use_cache=True, generator=None):
        """Yield the next token of every row, a LongTensor (B,), step by step. Rows that produced eos_id keep
        producing it; the stream ends once every row has. generator: one torch.Generator for all rows, or a
        list with one per row (then a row's random draws do not depend on the other rows).
        Call model.eval() first (dropout)."""
        _check_generate_args(idx, max_new_tokens, temperature, top_k, top_p)
        window = Window(self, idx, use_cache)
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

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, eos_id=None,
                 use_cache=True, generator=None):
        """Continue idx (B, T) by up to max_new_tokens tokens -> (B, T + n); temperature 0 is greedy."""
        new = list(self.generate_stream(idx, max_new_tokens, temperature, top_k, top_p, eos_id, use_cache, generator))
        return torch.cat([idx] + [t[:, None] for t in new], dim=1)

    @classmethod
    def from_checkpoint(cls, path, device='cpu'):
        """Load a train.py checkpoint -> (model in eval mode on device, the checkpoint dict).
        FileNotFoundError if there is no such file, ValueError if it is not a usable checkpoint."""
        path = str(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f'checkpoint {path} not found; train one with train.py or give the right path')
        try:
            ckpt = torch.load(path, map_location=device, weights_only=True)
        except Exception as e:  # truncated file, not a torch file, or pickled objects weights_only refuses
            raise ValueError(f'checkpoint {path} cannot be read ({type(e).__name__}); '
                             'it is corrupt or not from train.py, re-copy or retrain it') from None
        if not isinstance(ckpt, dict) or 'model' not in ckpt or 'model_args' not in ckpt:
            raise ValueError(f'checkpoint {path} lacks "model"/"model_args"; it was not written by train.py')
        try:
            model = cls(GPTConfig.from_dict(ckpt['model_args']))
        except ValueError as e:  # name the file in the config's own one-line message
            raise ValueError(f'checkpoint {path}: {e}') from None
        # torch.compile and DDP prefix parameter names; strip them in case a checkpoint kept them
        state = {re.sub(r'^(_orig_mod\.|module\.)+', '', k): v for k, v in ckpt['model'].items()}
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f'checkpoint {path} does not fit its model_args ({str(e).splitlines()[0]}); '
                             'it is corrupt or was edited, re-copy or retrain it') from None
        return model.to(device).eval(), ckpt


class Window:
    """What generation feeds the model, stepped the same way by generate_stream and by sample.py's beam search:
    each row's sequence so far, the window of its newest (at most block_size) tokens that the model reads, and
    those tokens' cached keys and values. logits() -> (B, V) for the next token; push() appends one.

    Past block_size the window slides: once it would exceed block_size tokens, it restarts from the newest
    block_size//2 tokens at position 0 and the cache is refilled from them. Cost: one forward over block_size//2
    tokens per block_size//2 new tokens (about one extra token of batched compute per token), and each token then
    sees between block_size//2 and block_size tokens of context instead of always a full block. The refill is
    needed because positions count from the window start and the kept tokens' keys were computed while the
    dropped tokens were visible. use_cache=False recomputes the very same windows from scratch every step, so
    both modes produce identical tokens."""

    def __init__(self, model, idx, use_cache=True):
        self.model, self.block_size = model, model.config.block_size
        self.seq, self.start = idx, max(0, idx.size(1) - self.block_size)  # (B, T); the window is seq[:, start:]
        self.caches = [KVCache(self.block_size) for _ in model.blocks] if use_cache else None
        self.cached = False  # whether the cache holds every window token but the newest

    @torch.no_grad()
    def logits(self):
        window = self.seq[:, self.start:]
        T = window.size(1)
        if self.cached:  # only the newest token goes through the model
            return self.model.decode_step(self.newest, torch.tensor([T - 1], device=window.device), self.caches)
        positions = torch.arange(T, device=window.device)  # (re)fill the cache from the whole window, or no cache
        mask = causal_mask(positions, T) if self.caches is not None else None  # None: causal among the window
        self.cached = self.caches is not None
        return self.model._logits(self.model._trunk(window, positions, mask, self.caches)[:, -1])

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


def _check_generate_args(idx, max_new_tokens, temperature, top_k, top_p):
    for broken, message in (
            (idx.dim() != 2 or idx.size(1) == 0,
             f'prompt must be (B, T) with T >= 1, got {tuple(idx.shape)}; start from at least one token, e.g. <|endoftext|>'),
            (max_new_tokens < 0, f'max_new_tokens={max_new_tokens} is negative; use 0 or more'),
            (temperature < 0, f'temperature={temperature} is negative; use 0 (greedy) or more'),
            (top_k is not None and top_k < 1, f'top_k={top_k} must be at least 1; or None to keep all tokens'),
            (top_p is not None and not 0 < top_p <= 1, f'top_p={top_p} must lie in (0, 1]; or None to keep all tokens')):
        if broken:
            raise ValueError(message)
