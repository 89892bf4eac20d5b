"""
How fast does a model train and sample on this machine?

Times full training steps (forward, backward, clipping, the optimizers: train.py's step) and reports tokens/s,
ms/step, model FLOPs utilisation against the device's own peak, and peak memory; then decoding as sample.py does
it: batch-1 greedy tokens/s with the KV cache (with the profiler's breakdown of a token's time, and the roofline: a
token reads every weight once, so the copy bandwidth measured in this run over the weight bytes bounds tokens/s),
the same without the cache, and batched sampling at each of `sample_batches`. Prints a table and writes every
figure as JSON (bench.json), for plots and comparisons across commits. (A running serve.py is measured by
serve.py --measure=URL.)

    python bench.py                                          # default model, random tokens
    python bench.py config/train_tinystories.py --compile=True  # that config's model, batch and dtype
    python bench.py config/train_tinystories_cpu.py --data=data/tinystories-demo  # and its real tokens and vocab
    python bench.py --n_layer=12 --n_head=12 --n_embd=768 --vocab_size=50304 --batch_size=2
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

import torch
from torch.utils.benchmark import Timer

import data as data_dir_reader
import decode
import optim
import rundir
from configurator import configure
from device import DEVICE, DTYPE, autocast, check_device, peak_flops, torch_dtype
from model import GPT, GPTConfig

# -----------------------------------------------------------------------------
# what to measure
steps = 20               # timed training steps; 0 skips the training benchmark
warmup_steps = 5         # untimed steps first: torch.compile, allocator growth and kernel choice happen here
data = ''                # '' = random tokens (pure compute); or a data_dir from prepare.py (its train.bin)
sample_tokens = 256      # new tokens per generation in the decoding benchmark; 0 skips it
sample_batches = (1, 8, 32)  # batch sizes of the batched-sampling measurement (one prompt, one story per row)
decode_anchor = 109.0    # tokens/s printed beside ours for scale: llama2.c's C run.c on its 15M shape (6L/288d,
                         # vocab 32000), fp32, 2 threads, on the 2-core CPU of README's measured table; 0 = none
threads = 0              # torch CPU threads; 0 = torch's default for training, decode.threads_for's for decoding
profile = ''             # write a torch.profiler Chrome trace of 3 extra steps here ('' = off; .json or .json.gz)
json_out = 'bench.json'  # where the figures go ('' = print only)
# model and batch: train.py's setting names; every GPTConfig field with model.py's default (vocab_size is for
# random tokens: with --data, meta.json's is used)
batch_size = 16
gradient_accumulation_steps = 1
globals().update(GPTConfig().to_dict())
# optimizers: their values don't change the cost, but the update and gradient clipping are part of a real step
optimizer = 'adamw'  # 'adamw' | 'muon', as in train.py
learning_rate = 6e-4
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
muon_lr = 0.02
muon_momentum = 0.95
muon_weight_decay = 0.0
normuon = False          # as train.py; its per-neuron step adds to Muon's cost
device = DEVICE
dtype = DTYPE            # as train.py: autocast dtype, float16 adds a GradScaler; the weights' dtype when decoding
compile = torch.cuda.is_available()  # on a CPU, compiling costs a minute and gains little for small models
seed = 1337
# -----------------------------------------------------------------------------
config = configure(globals(), strict_files=False)
for name, ok in (('batch_size', batch_size >= 1), ('gradient_accumulation_steps', gradient_accumulation_steps >= 1),
                 ('steps', steps >= 0), ('warmup_steps', warmup_steps >= 0), ('sample_tokens', sample_tokens >= 0),
                 ('threads', threads >= 0), ('sample_batches', all(isinstance(b, int) and b >= 1 for b in sample_batches))):
    if not ok:
        raise ValueError(f"{name}={config[name]!r} must be positive (steps, warmup_steps, sample_tokens, threads: or 0)")
device_type = check_device(device)
ctx, weights_dtype = autocast(device_type, dtype), torch_dtype(dtype)
if threads:
    torch.set_num_threads(threads)
torch.manual_seed(seed)
torch.set_float32_matmul_precision('high')  # TF32 for float32 on a GPU, as train.py (and peak_flops) expect


def timed(fn):
    """Seconds one call of fn takes, the device's queued work included (CUDA calls return before the kernels
    finish). A training step or a whole generation is long enough to time alone: torch.utils.benchmark's Timer,
    which warms up with extra calls, times the short copy below."""
    if device_type == 'cuda':
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device_type == 'cuda':
        torch.cuda.synchronize()
    return time.perf_counter() - t


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
        return subprocess.run(['git', 'describe', '--always', '--dirty', '--abbrev=12'], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def si(x, unit=''):
    """12345678 -> '12.3 M': short human-readable numbers for the table."""
    for scale, prefix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
        if abs(x) >= scale:
            return f'{x / scale:.3g} {prefix}{unit}'
    return f'{x:.3g} {unit}'


base_rss = rss_bytes()  # Python + torch before any model: subtract it to see what the model itself costs
start_id, tokens = 0, None  # the token generation starts from; real training tokens, if any
if data:
    if not os.path.exists(data):
        raise FileNotFoundError(f"--data={data} does not exist; pass a data_dir from prepare.py, or --data='' for "
                                "random tokens")
    data = data if os.path.isdir(data) else os.path.dirname(data)  # a data_dir, or one of its .bin files
    meta = data_dir_reader.read_meta(data)
    vocab_size, start_id = meta['vocab_size'], meta['eot_id']  # every story starts after <|endoftext|>
    tokens = data_dir_reader.open_split(data, 'train', vocab_size, block_size)
    data_rng = torch.Generator().manual_seed(seed)
else:  # one fixed batch of random tokens: pure compute
    fixed_batch = data_dir_reader.get_batch(torch.randint(vocab_size, (batch_size * (block_size + 1),),
                                                          generator=torch.Generator().manual_seed(seed)).numpy(),
                                            torch.arange(batch_size) * (block_size + 1), block_size, device)

# model and optimizer, built exactly as train.py builds them
gptconf = GPTConfig.from_dict({k: config[k] for k in GPTConfig().to_dict()} | {'vocab_size': vocab_size})
model = GPT(gptconf).to(device)
optimizers = optim.configure_optimizers(model, optimizer, learning_rate, (beta1, beta2), weight_decay, muon_lr,
                                        muon_momentum, muon_weight_decay, device_type, normuon=normuon)
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
train_model = torch.compile(model) if compile else model
n_params, n_params_ne = model.num_params(), model.num_params(non_embedding=True)
print(f"model: {n_layer}L/{n_head}h/{n_embd}d {pos}/{norm}/{act}, vocab {vocab_size}, block {block_size}, "
      f"{n_params / 1e6:.2f}M params ({n_params_ne / 1e6:.2f}M non-embedding)")
print(f"device: {device} ({device_name()}), {dtype}, {optimizer}, compile={compile}, torch {torch.__version__}, "
      f"{torch.get_num_threads()} threads, data: {data or 'random tokens'}")


def train_step():
    """train.py's step: micro-steps of forward and backward, then optim.step (clip, update, zero the gradients)."""
    for _ in range(gradient_accumulation_steps):
        x, y = fixed_batch if tokens is None else data_dir_reader.get_batch(
            tokens, torch.randint(len(tokens) - block_size, (batch_size,), generator=data_rng), block_size, device)
        with ctx:
            _, loss = train_model(x, y)
        scaler.scale(loss / gradient_accumulation_steps).backward()
    optim.step(optimizers, scaler, model.parameters(), 1.0, grad_clip)
    return loss


# training benchmark
train = None
if steps:
    model.train()
    t0 = time.perf_counter()
    loss_first = train_step().item()
    for _ in range(warmup_steps - 1):
        train_step()
    warmup_s = time.perf_counter() - t0
    if device_type == 'cuda':
        torch.cuda.reset_peak_memory_stats()  # the steady state, not compile-time autotuning
    step_ms = [timed(train_step) * 1e3 for _ in range(steps)]
    loss_last = train_step().item()
    peak_mem, mem_kind = (torch.cuda.max_memory_allocated(device), 'CUDA max allocated') if device_type == 'cuda' else \
        (rss_bytes(), 'process peak RSS')  # read before peak_flops: its CPU measurement allocates matrices of its own
    tokens_per_iter = batch_size * block_size * gradient_accumulation_steps
    tok_s = tokens_per_iter * steps / (sum(step_ms) / 1000)
    flops_per_token = model.flops_per_token()
    peak, peak_label = peak_flops(device_type, dtype)  # a table for known GPUs, else a matmul timed now
    mfu = tok_s * flops_per_token / peak
    train = dict(batch_size=batch_size, block_size=block_size, gradient_accumulation_steps=gradient_accumulation_steps,
                 tokens_per_iter=tokens_per_iter, steps=steps, warmup_steps=warmup_steps, warmup_s=warmup_s,
                 ms_per_iter=sum(step_ms) / steps, ms_per_iter_median=sorted(step_ms)[steps // 2],
                 ms_per_iter_min=min(step_ms), ms_per_iter_max=max(step_ms), tokens_per_s=tok_s,
                 flops_per_token=flops_per_token, achieved_flops=tok_s * flops_per_token, peak_flops=peak,
                 peak_flops_label=peak_label, mfu=mfu, peak_mem_bytes=peak_mem, peak_mem_kind=mem_kind,
                 base_mem_bytes=None if device_type == 'cuda' else base_rss, loss_first=loss_first,
                 loss_last=loss_last, step_ms=step_ms)
    print(f"train   batch {batch_size}x{block_size}" + (f" x{gradient_accumulation_steps} accumulation" if
          gradient_accumulation_steps > 1 else '') + f", {steps} timed steps after {warmup_steps} warm-up ({warmup_s:.1f}s)")
    print(f"  tokens/s      {tok_s:,.0f}")
    print(f"  ms/iter       {train['ms_per_iter']:.1f}  (median {train['ms_per_iter_median']:.1f}, min {min(step_ms):.1f}, "
          f"max {max(step_ms):.1f})")
    print(f"  MFU           {mfu * 100:.1f}%  ({si(tok_s * flops_per_token, 'FLOP/s')} of a peak of {si(peak, 'FLOP/s')}: "
          f"{peak_label})")
    print(f"  peak memory   {si(peak_mem, 'B')}  ({mem_kind}" + (f"; {si(base_rss, 'B')} before the model)" if
                                                             device_type != 'cuda' else ')'))

# profiler: a few more steps, kept apart from the timed ones since tracing slows them down
if profile and steps:
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if
                                                           device_type == 'cuda' else [])
    with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        for _ in range(3):
            timed(train_step)
    print(prof.key_averages().table(sort_by=f"self_{'cuda' if device_type == 'cuda' else 'cpu'}_time_total", row_limit=15))
    os.makedirs(os.path.dirname(os.path.abspath(profile)), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, rundir.atomic_open(profile, 'wb') as f:
        trace = os.path.join(tmp, os.path.basename(profile))  # torch writes a path; its suffix picks gzip or not
        prof.export_chrome_trace(trace)
        with open(trace, 'rb') as written:
            shutil.copyfileobj(written, f)
    print(f"profiler trace: {profile} (open in https://ui.perfetto.dev or chrome://tracing)")

# Decoding: what sample.py does. The weights are cast to dtype once (autocast would re-cast every matrix for every
# token) and laid out for the one-token step, each batch size runs on decode.threads_for's threads, and with
# compile the one-token step is compiled (CUDA graphs on a GPU). Greedy, so the cached and
# uncached paths must produce the same tokens, which checks the cache too.
sample = None
if sample_tokens:
    decode.transpose_weights(model.eval().to(weights_dtype))
    step = decode.compile_step(model) if compile else decode.decode_step
    prompt = torch.full((1, 1), start_id, dtype=torch.long, device=device)

    def generate(batch, n, use_cache=True, temperature=0.0):
        """n new tokens after the prompt in each of `batch` rows (a generator per row), (batch, n)."""
        torch.set_num_threads(decode.threads_for(batch, threads))  # as sample.py and serve.py decode
        generators = [torch.Generator(device=device).manual_seed(seed + i) for i in range(batch)]
        return torch.stack(list(decode.generate(model, prompt.expand(batch, 1), n, temperature=temperature,
                                                use_cache=use_cache, generator=generators, step=step)), 1)

    t0 = time.perf_counter()
    generate(1, min(8, sample_tokens))  # warm-up: allocation, kernel choice, and compiling the step
    warmup_s = time.perf_counter() - t0
    runs_s = [timed(lambda: generate(1, sample_tokens)) for _ in range(3)]
    best_s = min(runs_s)  # the fastest of 3: other processes only ever slow a run down
    uncached_s = timed(lambda: generate(1, sample_tokens, use_cache=False))
    same = bool(torch.equal(generate(1, sample_tokens), generate(1, sample_tokens, use_cache=False)))
    n = min(64, sample_tokens)  # a profiled decode: each op's self time per token, biggest first
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU] + (
            [torch.profiler.ProfilerActivity.CUDA] if device_type == 'cuda' else [])) as prof:
        profiled_s = timed(lambda: generate(1, n))
    attr = 'self_device_time_total' if device_type == 'cuda' else 'self_cpu_time_total'
    ops = sorted(((getattr(e, attr) / 1e3 / n, e.key) for e in prof.key_averages() if getattr(e, attr) > 0), reverse=True)
    parts = {key: ms for ms, key in ops[:6]} | {'other ops': sum(ms for ms, _ in ops[6:])}
    parts['outside ops'] = max(0.0, profiled_s * 1e3 / n - sum(ms for ms, _ in ops))  # Python, dispatch, launches
    a = torch.empty((256 if device_type == 'cuda' else 128) * 2**20 // 4, device=device)  # far larger than caches
    copy = Timer('b.copy_(a)', globals={'a': a, 'b': torch.empty_like(a)}, num_threads=torch.get_num_threads())
    bandwidth = 2 * a.nbytes / copy.blocked_autorange(min_run_time=0.3).median  # bytes read + written per second
    del a, copy
    weight_bytes = n_params_ne * weights_dtype.itemsize  # each matrix is read once per token
    batched = {}
    for batch in sample_batches:  # sampling one story per row, as sample.py's num_samples does
        generate(batch, min(8, sample_tokens), temperature=1.0)  # warm-up (and a compile per batch size)
        batched[str(batch)] = batch * sample_tokens / timed(lambda: generate(batch, sample_tokens, temperature=1.0))
    sample = dict(new_tokens=sample_tokens, batch_size=1, prompt_tokens=1, dtype=dtype, compiled=compile,
                  warmup_s=warmup_s, runs_s=runs_s, cached_tokens_per_s=sample_tokens / best_s,
                  ms_per_token=best_s * 1e3 / sample_tokens, uncached_tokens_per_s=sample_tokens / uncached_s,
                  speedup=uncached_s / best_s, same_tokens=same, breakdown_ms_per_token=parts,
                  profiled_ms_per_token=profiled_s * 1e3 / n, weight_bytes_per_token=weight_bytes,
                  copy_bandwidth=bandwidth, roofline_tokens_per_s=bandwidth / weight_bytes,
                  roofline_fraction=sample_tokens / best_s / (bandwidth / weight_bytes),
                  anchor_tokens_per_s=decode_anchor or None, batched_tokens_per_s=batched)
    print(f"decode  {sample_tokens} new tokens after a 1-token prompt, {dtype}, "
          f"{'compiled step' if compile else 'eager'} (warm-up {warmup_s:.1f}s)")
    print(f"  batch 1       {sample['cached_tokens_per_s']:,.1f} tokens/s, {sample['ms_per_token']:.2f} ms/token  (fastest "
          f"of 3)" + (f"   anchor: {decode_anchor:g} tokens/s" if decode_anchor else ''))
    print(f"  roofline      {sample['roofline_tokens_per_s']:,.0f} tokens/s: {si(weight_bytes, 'B')} of weights per token "
          f"at {si(bandwidth, 'B/s')} copy bandwidth ({sample['roofline_fraction'] * 100:.0f}% reached)")
    print("  breakdown     ms/token: " + ', '.join(f"{k} {v:.2f}" for k, v in parts.items()))
    print(f"  no cache      {sample['uncached_tokens_per_s']:,.1f} tokens/s  (cache {sample['speedup']:.1f}x faster; "
          f"same tokens: {'yes' if same else 'no'})")
    print("  batched       " + ', '.join(f"batch {b}: {v:,.0f}" for b, v in batched.items()) +
          " tokens/s (sampling, one generator per row)")

result = dict(version=1, time=time.strftime('%Y-%m-%dT%H:%M:%S%z'), commit=git_commit(), device=device,
              device_name=device_name(), dtype=dtype, compile=compile, torch=torch.__version__,
              threads=torch.get_num_threads(), data=data or None, config=config, model_args=gptconf.to_dict(),
              params=n_params, params_non_embedding=n_params_ne, train=train, sample=sample, profile=profile or None)
if json_out:
    os.makedirs(os.path.dirname(os.path.abspath(json_out)), exist_ok=True)
    rundir.write_json(json_out, result)
    print(f"wrote {json_out}")
