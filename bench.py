"""
How fast does a model train and sample on this machine?

Times full training iterations (forward, backward, clipping, the optimizers: what train.py does) and reports
tokens/s, ms/iter, model FLOPs utilisation against the device's own peak, and peak memory; then
decoding as sample.py does it: batch-1 greedy tokens/s and ms/token with the KV cache (the profiler's
breakdown of a token's time, and the roofline: a token must read every weight once, so the copy
bandwidth measured in this run divided by the weight bytes bounds tokens/s), the same without the
cache, and batched sampling's tokens/s at each of `sample_batches`. Prints a table and writes the
figures as JSON (bench.json) for plots and comparisons across commits.

    python bench.py                                          # default model, random tokens
    python bench.py config/train_tinystories.py --compile=True  # that config's model, batch and dtype
    python bench.py config/train_tinystories_cpu.py --data=data/tinystories-demo  # and its real tokens and vocab
    python bench.py --n_layer=12 --n_head=12 --n_embd=768 --vocab_size=50304 --batch_size=2
    python bench.py --data=data/tinystories --profile=trace.json   # real tokens (train.bin), profiler trace
    python bench.py --steps=0 --vocab_size=32000 --mlp_hidden=768  # decoding only, llama2.c's 15M shape

Settings use train.py's names, so any train config works (its other keys, like out_dir, are ignored).
"""
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import data as data_module
import decode
import rundir
from configurator import configure
from device import autocast, check_device, peak_flops
from model import GPT, GPTConfig
from optim import configure_optimizers

# -----------------------------------------------------------------------------
# what to measure
steps = 20               # timed training iterations; 0 skips the training benchmark
warmup_steps = 5         # untimed iterations first: torch.compile, allocator growth and kernel choice happen here
data = ''                # '' = random tokens (pure compute); or a .bin from prepare.py (or its folder: train.bin)
sample_tokens = 256      # new tokens per generation in the decoding benchmark; 0 skips it
sample_batches = (1, 8, 32)  # batch sizes of the batched-sampling measurement (one prompt, one story per row)
decode_anchor = 109.0    # tokens/s printed beside ours for scale: llama2.c's C run.c on its 15M shape (6L/288d,
                         # vocab 32000), fp32, 2 threads, on the 2-core CPU of README's measured table; 0 = none
threads = 0              # torch CPU threads; 0 = torch's default (README's CPU figures use 2)
profile = ''             # write a torch.profiler Chrome trace of 3 extra steps here ('' = off; .json or .json.gz)
json_out = 'bench.json'  # where the figures go ('' = print only)
# model and batch: train.py's setting names
batch_size = 16
gradient_accumulation_steps = 1
# every GPTConfig field, with model.py's default: --n_layer=12, --block_size=1024, ...; vocab_size is for random
# tokens (with --data, meta.json's vocab_size is used)
globals().update(GPTConfig().to_dict())
# optimizers: their values don't change the cost, but the update and gradient clipping are part of a real step
optimizer = 'adamw'  # 'adamw' | 'muon' (Muon for the blocks' matrices, AdamW for the rest), as in train.py
learning_rate = 6e-4
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
muon_lr = 0.02
muon_momentum = 0.95
muon_weight_decay = 0.0
# system
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'bfloat16' if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else (
    'float16' if torch.cuda.is_available() else 'float32')  # as train.py: autocast dtype, float16 adds a GradScaler
compile = torch.cuda.is_available()  # on a CPU, compiling costs a minute and gains little for small models
seed = 1337             # in [0, 2**32 - 1]
# -----------------------------------------------------------------------------
config = configure(globals(), strict_files=False)

for name in ('batch_size', 'block_size', 'gradient_accumulation_steps', 'vocab_size'):
    if config[name] < 1:
        raise ValueError(f"{name}={config[name]} must be at least 1; pass a positive --{name}")
if not all(isinstance(b, int) and b >= 1 for b in sample_batches):
    raise ValueError(f"sample_batches={sample_batches!r} must hold positive batch sizes, like --sample_batches='(1, 8, 32)'")
for name in ('steps', 'warmup_steps', 'sample_tokens', 'threads'):
    if config[name] < 0:
        raise ValueError(f"{name}={config[name]} must not be negative; pass --{name}=0 or more")
for name, ok, want in (('learning_rate', learning_rate > 0, 'above 0'), ('beta1', 0 <= beta1 < 1, 'in [0, 1)'),
                       ('beta2', 0 <= beta2 < 1, 'in [0, 1)'), ('weight_decay', weight_decay >= 0, 'at least 0'),
                       ('seed', 0 <= seed <= 2**32 - 1, 'in [0, 2**32 - 1]')):
    if not ok:  # as train.py refuses them: torch would stop with a traceback
        raise ValueError(f"{name}={config[name]!r} must be {want}")
device_type = check_device(device)  # one-line exit for an unusable device
ctx = autocast(device_type, dtype)  # and for an unknown dtype
ptdtype = getattr(torch, dtype)  # the weights' dtype when decoding
if threads:
    torch.set_num_threads(threads)
torch.manual_seed(seed)
if device_type == 'cuda':
    torch.set_float32_matmul_precision('high')  # TF32 for float32, as train.py (and peak_flops) expect


def sync():
    """Wait for queued GPU work: CUDA calls return before the kernels finish, so timings need this."""
    if device_type == 'cuda':
        torch.cuda.synchronize()
    elif device_type == 'mps':
        torch.mps.synchronize()


def rss_bytes():
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == 'darwin' else 1024)


def device_name():
    if device_type == 'cuda':
        return torch.cuda.get_device_name(device)
    try:
        with open('/proc/cpuinfo') as f:
            names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
        return f'{names[0]} ({len(names)} cores)'
    except (OSError, IndexError):
        return platform.processor() or platform.machine()


def git_commit():
    """The commit being measured ('-dirty' if the tree has changes), so JSON files compare across commits."""
    try:
        p = subprocess.run(['git', 'describe', '--always', '--dirty', '--abbrev=12'], capture_output=True,
                           text=True, cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10)
        return p.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def si(x, unit=''):
    """12345678 -> '12.3M': short human-readable numbers for the table."""
    for scale, prefix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
        if abs(x) >= scale:
            return f'{x / scale:.3g} {prefix}{unit}'
    return f'{x:.3g} {unit}'


def progress(msg):
    """A live status line on a terminal; nothing in logs, where carriage returns would make a mess."""
    if sys.stdout.isatty():
        print(msg + ' ' * 10, end='\r', flush=True)


base_rss = rss_bytes()  # Python + torch before any model: subtract it to see what the model itself costs

# data: real tokens exercise the loader too; random ones time pure compute
start_id = 0  # the token generation starts from
if data and os.path.isdir(data):
    data = os.path.join(data, 'train.bin')  # a data_dir, as train.py takes: its training split
if data:
    if not os.path.isfile(data):
        raise FileNotFoundError(f"--data={data} is not a file; pass a train.bin/val.bin written by prepare.py, or --data='' for random tokens")
    meta = data_module.read_meta(os.path.dirname(data))  # the meta.json prepare.py wrote beside the .bin, checked
    meta_path = os.path.join(os.path.dirname(data), 'meta.json')
    vocab_size, token_dtype = meta['vocab_size'], np.dtype(meta['dtype'])
    start_id = meta['eot_id']  # every story starts after <|endoftext|>
    if os.path.getsize(data) % token_dtype.itemsize:
        raise ValueError(f"{data} is not a whole number of {token_dtype} tokens; it is truncated or not from prepare.py, re-run it")
    tokens = np.memmap(data, dtype=token_dtype, mode='r')
    if len(tokens) <= block_size:
        raise ValueError(f"{data} holds {len(tokens)} tokens, too few for block_size={block_size}; use a bigger file or a smaller --block_size")
    top = int(tokens.max())  # an id past the vocabulary would fail deep inside the embedding
    if top >= vocab_size:
        raise ValueError(f"{data} holds token id {top} but {meta_path} says vocab_size={vocab_size}; they are not "
                         "from the same prepare.py run: re-run it")
    data_rng = np.random.default_rng(seed)
else:
    xy = torch.randint(vocab_size, (batch_size, block_size + 1), generator=torch.Generator().manual_seed(seed))
    fixed_batch = xy[:, :-1].contiguous().to(device), xy[:, 1:].contiguous().to(device)


def get_batch():
    if not data:
        return fixed_batch
    ix = data_rng.integers(0, len(tokens) - block_size, size=batch_size)
    xy = torch.from_numpy(np.stack([tokens[i:i + block_size + 1] for i in ix]).astype(np.int64))
    x, y = xy[:, :-1].contiguous(), xy[:, 1:].contiguous()  # as a loader hands them over
    if device_type == 'cuda':  # pinned memory lets the copy overlap with compute, as in train.py
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


# model and optimizer, built exactly as train.py builds them
gptconf = GPTConfig.from_dict({**{k: config[k] for k in GPTConfig().to_dict()}, 'vocab_size': vocab_size})
model = GPT(gptconf).to(device)
optimizers = configure_optimizers(model, optimizer, learning_rate, (beta1, beta2), weight_decay, muon_lr, muon_momentum,
                                  muon_weight_decay, device_type)
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))  # fp16 needs loss scaling
train_model = torch.compile(model) if compile else model
n_params, n_params_ne = model.num_params(), model.num_params(non_embedding=True)
print(f"model: {n_layer}L/{n_head}h/{n_embd}d {pos}/{norm}/{act}, vocab {vocab_size}, block {block_size}, "
      f"{n_params / 1e6:.2f}M params ({n_params_ne / 1e6:.2f}M non-embedding)")
print(f"device: {device} ({device_name()}), {dtype}, {optimizer}, compile={compile}, torch {torch.__version__}, "
      f"{torch.get_num_threads()} threads, data: {data or 'random tokens'}")


def train_step():
    for _ in range(gradient_accumulation_steps):
        x, y = get_batch()
        with ctx:
            _, loss = train_model(x, y)
        scaler.scale(loss / gradient_accumulation_steps).backward()
    if grad_clip > 0:
        for opt in optimizers:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    for opt in optimizers:
        scaler.step(opt)
    scaler.update()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    return loss


# training benchmark
train = None
if steps:
    model.train()
    t0 = time.perf_counter()
    for i in range(warmup_steps):
        train_step()
        sync()
        progress(f"warm-up {i + 1}/{warmup_steps}: {time.perf_counter() - t0:.1f}s")
    warmup_s = time.perf_counter() - t0
    if device_type == 'cuda':
        torch.cuda.reset_peak_memory_stats()  # the steady state, not compile-time autotuning
    step_ms, losses = [], []
    for i in range(steps):
        t = time.perf_counter()
        loss = train_step()
        sync()
        step_ms.append((time.perf_counter() - t) * 1000)
        losses.append(loss.item())  # after the clock stops: it would sync early on a GPU
        progress(f"step {i + 1}/{steps}: {step_ms[-1]:.1f} ms, loss {losses[-1]:.3f}")
    progress(' ' * 40)
    if device_type == 'cuda':
        peak_mem, mem_kind = torch.cuda.max_memory_allocated(device), 'CUDA max allocated'
    else:  # read before peak_flops below: its CPU measurement allocates big matrices of its own
        peak_mem, mem_kind = rss_bytes(), 'process peak RSS'
    tokens_per_iter = batch_size * block_size * gradient_accumulation_steps
    tok_s = tokens_per_iter * steps / (sum(step_ms) / 1000)
    flops_per_token = model.flops_per_token()
    peak, peak_label = peak_flops(device_type, dtype)  # a table for known GPUs, else a matmul timed now
    mfu = tok_s * flops_per_token / peak
    train = dict(batch_size=batch_size, block_size=block_size, gradient_accumulation_steps=gradient_accumulation_steps,
                 tokens_per_iter=tokens_per_iter, steps=steps, warmup_steps=warmup_steps, warmup_s=warmup_s,
                 ms_per_iter=sum(step_ms) / steps, ms_per_iter_median=float(np.median(step_ms)),
                 ms_per_iter_min=min(step_ms), ms_per_iter_max=max(step_ms),
                 tokens_per_s=tok_s, flops_per_token=flops_per_token, achieved_flops=tok_s * flops_per_token,
                 peak_flops=peak, peak_flops_label=peak_label, mfu=mfu, peak_mem_bytes=peak_mem,
                 peak_mem_kind=mem_kind, base_mem_bytes=None if device_type == 'cuda' else base_rss,
                 loss_first=losses[0], loss_last=losses[-1], step_ms=step_ms)

# profiler: a few more steps, kept apart from the timed ones since tracing slows them down
if profile and steps:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device_type == 'cuda':
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        for _ in range(3):
            train_step()
            sync()
    sort_key = 'self_cuda_time_total' if device_type == 'cuda' else 'self_cpu_time_total'
    print(prof.key_averages().table(sort_by=sort_key, row_limit=15))
    os.makedirs(os.path.dirname(os.path.abspath(profile)), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, rundir.atomic_open(profile, 'wb') as f:
        trace = os.path.join(tmp, os.path.basename(profile))  # torch writes a path; its suffix picks gzip or not
        prof.export_chrome_trace(trace)
        with open(trace, 'rb') as written:
            shutil.copyfileobj(written, f)
    print(f"profiler trace: {profile} (open in https://ui.perfetto.dev or chrome://tracing)")

# Decoding benchmark: what sample.py does. The weights are cast to dtype once (as sample.py casts them: autocast
# would re-cast every matrix for every token), and with compile the one-token step is compiled, as CUDA graphs
# on a GPU. Greedy, so the cached and uncached paths must produce the same tokens, which checks the cache too.
sample = None
if sample_tokens:
    model.eval().to(ptdtype)
    step = decode.compile_step(model) if compile else decode.decode_step
    prompt = torch.full((1, 1), start_id, dtype=torch.long, device=device)

    def timed_decode(batch, n, use_cache=True, temperature=0.0):
        """Generate n tokens after the prompt in each of `batch` rows -> (tokens, seconds)."""
        generators = [torch.Generator(device=device).manual_seed(seed + i) for i in range(batch)]
        sync()
        t = time.perf_counter()
        out = torch.stack(list(decode.generate(model, prompt.expand(batch, 1), n, temperature=temperature,
                                               use_cache=use_cache, generator=generators, step=step)), 1)
        sync()
        return out, time.perf_counter() - t

    def copy_bandwidth():
        """Bytes read plus bytes written per second copying a tensor far larger than the caches, best of 10."""
        a = torch.empty((256 if device_type == 'cuda' else 128) * 2**20 // 4, device=device)
        b = torch.empty_like(a)
        b.copy_(a)
        times = []
        for _ in range(10):
            sync()
            t = time.perf_counter()
            b.copy_(a)
            sync()
            times.append(time.perf_counter() - t)
        return 2 * a.nbytes / min(times)

    def breakdown(n):
        """ms per token of the ops of a profiled n-token decode, by self time (GPU time on a GPU), biggest first;
        the time outside every op (Python, dispatch, launches; on a GPU its idle time) is the last entry."""
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device_type == 'cuda':
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            _, s = timed_decode(1, n)
        attr = 'self_device_time_total' if device_type == 'cuda' else 'self_cpu_time_total'
        ops = sorted(((getattr(e, attr) / 1e3 / n, e.key) for e in prof.key_averages() if getattr(e, attr) > 0),
                     reverse=True)
        top = {key: ms for ms, key in ops[:6]}
        top['other ops'] = sum(ms for ms, _ in ops[6:])
        top['outside ops'] = max(0.0, s * 1e3 / n - sum(ms for ms, _ in ops))
        return top, s * 1e3 / n

    t0 = time.perf_counter()
    timed_decode(1, min(8, sample_tokens))  # warm-up: allocation, kernel choice, and compiling the step
    decode_warmup_s = time.perf_counter() - t0
    runs = [timed_decode(1, sample_tokens) for _ in range(3)]  # the fastest of 3: other processes only slow one down
    cached, best_s = min(runs, key=lambda r: r[1])
    uncached, uncached_s = timed_decode(1, sample_tokens, use_cache=False)
    parts, profiled_ms = breakdown(min(64, sample_tokens))
    weight_bytes = model.num_params(non_embedding=True) * ptdtype.itemsize  # each matrix is read once per token
    bandwidth = copy_bandwidth()
    batched = {}
    for b in sample_batches:  # sampling one story per row, as sample.py's num_samples does
        timed_decode(b, min(8, sample_tokens), temperature=1.0)  # warm-up (and a compile per batch size)
        batched[str(b)] = b * sample_tokens / timed_decode(b, sample_tokens, temperature=1.0)[1]
    sample = dict(new_tokens=sample_tokens, batch_size=1, prompt_tokens=1, dtype=dtype, compiled=compile,
                  warmup_s=decode_warmup_s, runs_s=[s for _, s in runs],
                  cached_tokens_per_s=sample_tokens / best_s, ms_per_token=best_s * 1e3 / sample_tokens,
                  cached_tokens_per_s_median=sample_tokens / float(np.median([s for _, s in runs])),
                  uncached_tokens_per_s=sample_tokens / uncached_s, speedup=uncached_s / best_s,
                  same_tokens=bool(torch.equal(cached, uncached)),
                  breakdown_ms_per_token=parts, profiled_ms_per_token=profiled_ms,
                  weight_bytes_per_token=weight_bytes, copy_bandwidth=bandwidth,
                  roofline_tokens_per_s=bandwidth / weight_bytes,
                  roofline_fraction=sample_tokens / best_s / (bandwidth / weight_bytes),
                  anchor_tokens_per_s=decode_anchor or None, batched_tokens_per_s=batched)

# the table
if train:
    print(f"train   batch {batch_size}x{block_size}" + (f" x{gradient_accumulation_steps} accumulation" if gradient_accumulation_steps > 1 else '')
          + f", {steps} timed steps after {warmup_steps} warm-up ({warmup_s:.1f}s)")
    print(f"  tokens/s      {tok_s:,.0f}")
    print(f"  ms/iter       {train['ms_per_iter']:.1f}  (median {train['ms_per_iter_median']:.1f}, min {min(step_ms):.1f}, max {max(step_ms):.1f})")
    print(f"  MFU           {mfu * 100:.1f}%  ({si(tok_s * flops_per_token, 'FLOP/s')} of a peak of {si(peak, 'FLOP/s')}: {peak_label})")
    print(f"  peak memory   {si(peak_mem, 'B')}  ({mem_kind}" + (f"; {si(base_rss, 'B')} before the model)" if device_type != 'cuda' else ')'))
if sample:
    s = sample
    print(f"decode  {sample_tokens} new tokens after a 1-token prompt, {dtype}, "
          f"{'compiled step' if compile else 'eager'} (warm-up {s['warmup_s']:.1f}s)")
    print(f"  batch 1       {s['cached_tokens_per_s']:,.1f} tokens/s, {s['ms_per_token']:.2f} ms/token  (fastest of 3; "
          f"median {s['cached_tokens_per_s_median']:,.1f})" + (f"   anchor: {decode_anchor:g} tokens/s" if decode_anchor else ''))
    print(f"  roofline      {s['roofline_tokens_per_s']:,.0f} tokens/s: {si(weight_bytes, 'B')} of weights per token at "
          f"{si(bandwidth, 'B/s')} copy bandwidth ({s['roofline_fraction'] * 100:.0f}% reached)")
    print(f"  breakdown     ms/token, profiled at {profiled_ms:.2f}: " + ', '.join(f"{k} {v:.2f}" for k, v in parts.items()))
    print(f"  no cache      {s['uncached_tokens_per_s']:,.1f} tokens/s  (cache {s['speedup']:.1f}x faster; "
          f"same tokens: {'yes' if s['same_tokens'] else 'no'})")
    print("  batched       " + ', '.join(f"batch {b}: {v:,.0f}" for b, v in batched.items()) +
          " tokens/s (sampling, one generator per row)")

result = dict(version=1, time=time.strftime('%Y-%m-%dT%H:%M:%S%z'), commit=git_commit(), device=device,
              device_name=device_name(), dtype=dtype, compile=compile, torch=torch.__version__,
              threads=torch.get_num_threads(), data=data or None, config=config, model_args=gptconf.to_dict(),
              params=n_params, params_non_embedding=n_params_ne, train=train, sample=sample, profile=profile or None)
if device_type == 'cuda':
    result['flash_sdp_enabled'] = torch.backends.cuda.flash_sdp_enabled()
if json_out:
    os.makedirs(os.path.dirname(os.path.abspath(json_out)), exist_ok=True)
    rundir.write_json(json_out, result)
    print(f"wrote {json_out}")
