"""
A GPT language model in one file. GPTConfig picks every architecture the project's seeds use:
positions (learned / sinusoidal / rotary / none), normalisation (LayerNorm / RMSNorm / none, pre or post),
MLP activation (GELU / ReLU / squared ReLU / SiLU / SwiGLU / GeGLU), grouped-query attention and weight tying;
and the speed-run switches, all off by default: QK-norm, zero-initialised output projections, logit soft-capping,
x0 mixing.
Decoding (the KV cache, sampling, beam search) lives in decode.py; the model only takes a cache when given one.

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
[10] Chowdhery et al. 2022, PaLM, appendix B (training FLOPs per token, MFU)
[11] Henry et al. 2020, Query-Key Normalization for Transformers; Dehghani et al. 2023, Scaling Vision Transformers
     to 22 Billion Parameters (QK-norm: normalised queries and keys keep attention logits from growing unbounded)
[12] So et al. 2021, Primer: Searching for Efficient Transformers for Language Modeling (squared ReLU)
[13] Gemma Team 2024, Gemma 2 (final-logit soft-capping); Jordan et al. 2024, modded-nanogpt (its speed-run use)
[14] Zhang et al. 2019, Fixup Initialization; Jordan et al. 2024, modded-nanogpt (zero-initialised projections)
[15] Karpathy 2025, nanochat; Jordan et al. 2024, modded-nanogpt (x0 mixing: every block re-reads the embedding)
"""
import math
import os
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
from torch.nn import functional as F

POS = ('learned', 'sinusoidal', 'rope', 'none')
NORMS = ('layernorm', 'rmsnorm', 'none')
NORM_POS = ('pre', 'post')
ACTS = ('gelu', 'relu', 'relu2', 'silu', 'swiglu', 'geglu')
GATED = ('swiglu', 'geglu')


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
    x0_mix: bool = False            # each block reads a learned mix of the stream and the embedding x0 [15]

    def __post_init__(self):
        """Values arrive from command lines and checkpoints: refuse what the model cannot be, in one line."""
        for f in fields(self):
            v = getattr(self, f.name)
            want = int if f.default is None else {int: int, float: (int, float), bool: bool, str: str}[type(f.default)]
            if not (v is None and f.default is None) and (isinstance(v, bool) != (want is bool) or not isinstance(v, want)):
                raise ValueError(f'model config: {f.name}={v!r} has the wrong type; give '
                                 f'{"an int" if want is int else "a " + type(f.default).__name__}')
        for name, allowed in (('pos', POS), ('norm', NORMS), ('norm_pos', NORM_POS), ('act', ACTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f'model config: {name}={getattr(self, name)!r} is unknown; use one of {", ".join(allowed)}')
        hd = self.n_embd // self.n_head if self.n_head > 0 else 0
        for broken, what, fix in (
                (min(self.vocab_size, self.block_size, self.n_layer, self.n_head, self.n_embd) < 1,
                 'vocab_size, block_size, n_layer, n_head and n_embd must be positive', 'set each to at least 1'),
                (self.n_embd % self.n_head, f'n_embd={self.n_embd} is not divisible by n_head={self.n_head}',
                 'pick n_embd a multiple of n_head'),
                (self.n_kv_head is not None and (self.n_kv_head < 1 or self.n_head % self.n_kv_head),
                 f'n_kv_head={self.n_kv_head} must divide n_head={self.n_head}', 'use a divisor of n_head (or None)'),
                (self.pos == 'rope' and hd % 2, f'rope needs an even head size, got n_embd/n_head={hd}',
                 'change n_embd or n_head'),
                (self.pos == 'sinusoidal' and self.n_embd % 2, f'sinusoidal positions need an even n_embd, got '
                 f'{self.n_embd}', 'use an even n_embd'),
                (self.mlp_hidden is not None and self.mlp_hidden < 1, f'mlp_hidden={self.mlp_hidden} must be positive',
                 'set it to at least 1, or None for the default'),
                (not (0 <= self.dropout < 1 and 0 <= self.label_smoothing < 1),
                 'dropout and label_smoothing must lie in [0, 1)', 'e.g. --dropout=0.1 --label_smoothing=0.1'),
                (not self.rope_theta > 0, f'rope_theta={self.rope_theta} must be positive', 'the usual value is 10000'),
                (not self.logit_softcap >= 0, f'logit_softcap={self.logit_softcap} must not be negative',
                 'use 0 (off) or a cap such as 15')):
            if broken:
                raise ValueError(f'model config: {what}; {fix}')

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

    @classmethod
    def from_dict(cls, d, **changes):
        """A checkpoint's model_args (and changes to them) -> GPTConfig. A field the dict lacks takes its default,
        which always means 'off' (the switches), so a checkpoint written before a switch existed loads as it trained."""
        if not isinstance(d, dict):
            raise ValueError(f'model config is {type(d).__name__}, not a dict of GPTConfig fields; '
                             'it was not written by train.py')
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f'model config has unknown fields {unknown}; it comes from another model.py version, '
                             'update model.py')
        return cls(**{**d, **changes})


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
    """Rotate x (B, T, H, hd) by the angles of its positions, cos/sin (T, 1, hd) or (B, T, 1, hd) from rope_tables.
    Dimension i is paired with i + hd/2 (not 2i with 2i+1): the same rotation as [4] in a permuted basis, with no
    strided indexing: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), where rolling x by hd/2 swaps the halves."""
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
    """The additive attention mask (..., T, size) of queries at positions (T,) or (B, T) over key slots 0..size-1:
    0 where the slot is at or before the query's position, -inf after it (a later token, or a cache slot not
    written for this sequence), so softmax gives exact zeros. Additive rather than boolean because SDPA converts
    boolean masks on every call. Built when a forward needs one (the manual path, a cache), never stored."""
    slots = torch.arange(size, device=positions.device)
    return torch.zeros(positions.shape + (size,), device=positions.device).masked_fill(
        slots > positions[..., None], float('-inf'))


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

    def forward(self, x, positions, rope=None, cache=None, maps=None):
        """x (B, T, C) at positions (T,) or (B, T). Without a cache the T tokens attend causally among themselves;
        with one (decode.KVCache) their keys and values are written to it at their positions and each token reads
        every cache slot up to its own position."""
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
        mask = None  # None: causal among the T tokens (SDPA's is_causal, no mask built)
        if cache is not None:
            k, v = cache.update(k, v, positions)  # (B, nkv, S, hd): every slot of the cache
            mask = causal_mask(positions, k.size(2))
            mask = (mask[:, None] if mask.dim() == 3 else mask).to(q.dtype)  # (B, 1, T, S) or (T, S)
        if maps is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                               dropout_p=self.dropout if self.training else 0.0,
                                               enable_gqa=nkv != nh)  # (B, nh, T, hd)
        else:  # the manual path: the attention weights themselves, for report.py's maps
            if nkv != nh:  # each group of n_head/n_kv_head query heads shares one key/value head
                k, v = k.repeat_interleave(nh // nkv, dim=1), v.repeat_interleave(nh // nkv, dim=1)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.hd))  # (B, nh, T, S)
            att = (att + (causal_mask(positions, T).to(q.dtype) if mask is None else mask)).softmax(dim=-1)
            maps.append(att)  # exp(-inf) = 0: the future gets exact zeros
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

    def forward(self, x, positions, rope=None, cache=None, maps=None):
        if self.post:  # [1]: normalise each residual sum
            x = self.norm1(x + self.attn(x, positions, rope, cache, maps))
            return self.norm2(x + self.mlp(x))
        # [2]: normalise each sub-layer's input, leaving a clean identity path through the residual stream
        x = x + self.attn(self.norm1(x), positions, rope, cache, maps)
        return x + self.mlp(self.norm2(x))


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
        if c.x0_mix:  # [15]: x <- resid_lambdas[i] * x + x0_lambdas[i] * x0 before block i; starts as the plain stream
            self.resid_lambdas = nn.Parameter(torch.ones(c.n_layer))
            self.x0_lambdas = nn.Parameter(torch.zeros(c.n_layer))
        # post-norm blocks already end in a norm, so only pre-norm needs a final one [2]
        self.norm_f = make_norm(c) if c.norm_pos == 'pre' else nn.Identity()
        self.lm_head = nn.Linear(c.n_embd, c.padded_vocab, bias=False)
        if c.tie_weights:  # [3]: one matrix both reads and writes tokens; fewer parameters, better perplexity
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            # [2]: each residual projection adds to the stream 2*n_layer times, so shrink its init to keep
            # the stream's variance independent of depth; [14] starts it at 0 instead
            residual = getattr(m, 'residual', False)
            nn.init.normal_(m.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer) if residual else 0.02)
            if residual and self.config.zero_init:
                nn.init.zeros_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def trunk(self, idx, positions, caches=None, maps=None):
        """Final hidden states (B, T, C) of tokens idx (B, T) at positions (T,) or (B, T); caches: one
        decode.KVCache per block, or None; maps: a list to collect every layer's attention weights into."""
        c = self.config
        x = self.wte(idx)  # (B, T, C)
        if c.pos == 'sinusoidal':  # [1] 3.4: scale embeddings by sqrt(C) so the unit-size sinusoids do not drown them
            x = x * math.sqrt(c.n_embd) + self.sinusoid[positions]
        elif c.pos == 'learned':
            x = x + self.wpe(positions)
        # (pos='none' adds nothing: a causal decoder can still infer order from what each token may see [8])
        rope = (self.rope_cos[positions], self.rope_sin[positions]) if c.pos == 'rope' else None
        x = x0 = self.drop(x)
        for i, block in enumerate(self.blocks):
            if c.x0_mix:  # the token's own embedding stays within reach of every layer
                x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            x = block(x, positions, rope, caches[i] if caches else None, maps)
        return self.norm_f(x)

    def logits(self, x, padded=False):
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
        x = self.trunk(idx, torch.arange(T, device=idx.device))
        if targets is None:  # inference needs only the last position: skip the (T, vocab) matmul
            return self.logits(x[:, [-1]]), None  # (B, 1, V)
        logits = self.logits(x, padded=True)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                               label_smoothing=self.config.label_smoothing if self.training else 0.0)  # [1] 5.4
        return logits, loss

    @torch.no_grad()
    def attention_maps(self, idx):
        """Softmax attention weights of every layer, a list of (B, n_head, T, T), computed by the manual path."""
        maps = []
        self.trunk(idx, torch.arange(idx.size(1), device=idx.device), maps=maps)
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

    @classmethod
    def from_checkpoint(cls, path, device='cpu', **changes):
        """Load a train.py checkpoint -> (model in eval mode on device, the checkpoint dict, everything in it on
        the CPU). changes: config fields that do not shape the weights (dropout, label_smoothing) to set anew.
        FileNotFoundError if there is no such file, ValueError if it is not a usable checkpoint."""
        path = str(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f'checkpoint {path} not found; train one with train.py or give the right path')
        try:  # weights_only: a checkpoint is data and can never run code
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as e:  # truncated file, not a torch file, or pickled objects weights_only refuses
            raise ValueError(f'checkpoint {path} cannot be read ({type(e).__name__}); '
                             'it is corrupt or not from train.py, re-copy or retrain it') from None
        if not isinstance(ckpt, dict) or 'model' not in ckpt or 'model_args' not in ckpt:
            raise ValueError(f'checkpoint {path} lacks "model"/"model_args"; it was not written by train.py')
        try:
            model = cls(GPTConfig.from_dict(ckpt['model_args'], **changes))
            model.load_state_dict(ckpt['model'])
        except ValueError as e:  # name the file in the config's own one-line message
            raise ValueError(f'checkpoint {path}: {e}') from None
        except (RuntimeError, TypeError) as e:  # torch lists every tensor: its first line says enough
            raise ValueError(f'checkpoint {path} does not fit its model_args ({str(e).splitlines()[0][:120]}); '
                             'it is corrupt or was edited, re-copy or retrain it') from None
        return model.to(device).eval(), ckpt
