"""
Train a GPT on the tokens prepare.py wrote, on one CPU, one GPU, or many GPUs.

    python train.py                                    # the defaults below
    python train.py config/train_tinystories_cpu.py    # the CPU demo (make demo)
    python train.py config/seed001.py --max_iters=2000 # a config file, then --key=value overrides
    python train.py --out_dir=out --init_from=resume   # continue out/last.pt exactly where it stopped

A resumed run restores weights, optimizer, grad scaler, iteration, training time, RNG states and the
data sampler, so its losses equal those of a run that was never interrupted. Ctrl-C or SIGTERM
finishes the current step, writes out_dir/last.pt and exits cleanly (a second Ctrl-C stops at once).

out_dir belongs to one run. The process writing it holds a lock on it, so a second run there is refused
with the first one's name; a fresh run (init_from='scratch') refuses a directory that holds another run's
checkpoints or metrics unless --overwrite=True; and every file is replaced atomically, so a crash or a full
disk leaves the previous checkpoint whole.

Data parallel (DDP) with torchrun: nccl on GPUs, gloo on CPUs. On one machine with 8 GPUs:
    torchrun --standalone --nproc_per_node=8 train.py config/train_tinystories.py
On two machines with 8 GPUs each, run this on both: --node_rank=0 on the machine at MASTER_IP (an
address both can reach), --node_rank=1 on the other (without InfiniBand, also export NCCL_IB_DISABLE=1):
    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 --master_addr=MASTER_IP --master_port=29500 \
        train.py config/train_tinystories.py
Only global rank 0 writes checkpoints and logs; resuming reads out_dir/last.pt on every process,
so across machines out_dir must be on a shared filesystem.

batch_size is sequences per micro-step per process; gradient_accumulation_steps is the number of
micro-steps per optimizer step summed over ALL processes (it must be divisible by their number).
So the global batch (batch_size * gradient_accumulation_steps sequences) is a property of the
config, not of the machine count, and a run on N processes sees exactly the data one process does.
"""
import json
import math
import os
import random
import signal
import sys
import time
from contextlib import nullcontext, suppress

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import rundir
import tokenizer
from configurator import configure, describe
from device import autocast, check_device, peak_flops
from model import GPT, GPTConfig
from optim import OPTIMIZERS, Muon, configure_optimizers

# -----------------------------------------------------------------------------
# settings (defaults: a small Llama-style model on the prepared TinyStories data)
# I/O
out_dir = 'out'
data_dir = 'data/tinystories'
init_from = 'scratch'  # 'scratch' or 'resume' (from out_dir/last.pt)
overwrite = False  # True: a fresh run may replace the run already in out_dir (its checkpoints and metrics)
eval_interval = 500
log_interval = 10
eval_iters = 50  # batches per split per evaluation; the same fixed windows every time
eval_only = False  # evaluate once and exit, writing nothing
dry_run = False  # check the settings, data and model as a run would, print them as JSON and exit, writing nothing
always_save_checkpoint = True  # write last.pt at every evaluation, not only at the end
# wandb (imported only when enabled; WANDB_MODE=offline works)
wandb_log = False
wandb_project = 'tinystories-gpt'
wandb_run_name = 'run'
# data
batch_size = 32  # sequences per micro-step, per process
gradient_accumulation_steps = 4  # micro-steps per optimizer step, summed over all processes
# model: every GPTConfig field but vocab_size (data_dir/meta.json sets it) is a setting here, with the default and
# the meaning model.py gives it: --block_size=512, --n_layer=12, --pos=learned, --act=relu2, --qk_norm=True, ...
globals().update({k: v for k, v in GPTConfig().to_dict().items() if k != 'vocab_size'})
# optimizers and the learning-rate schedule
optimizer = 'adamw'  # 'adamw': AdamW for everything | 'muon': Muon for the blocks' weight matrices, AdamW for the rest
learning_rate = 1e-3  # AdamW's peak rate, reached at the end of warmup; > 0
max_iters = 5000  # optimizer steps
weight_decay = 0.1  # >= 0
beta1 = 0.9  # in [0, 1)
beta2 = 0.95  # in [0, 1)
grad_clip = 1.0  # max global gradient norm; 0 disables clipping
lr_schedule = 'cosine'  # 'cosine' | 'vaswani' | 'constant' (see get_lr)
warmup_iters = 200
lr_decay_iters = 0  # cosine reaches min_lr here (at least warmup_iters); 0 means max_iters
min_lr = 1e-4  # where the cosine ends, in [0, learning_rate]
muon_lr = 0.02  # Muon's peak rate; the schedule scales it as AdamW's (its floor: muon_lr * min_lr / learning_rate)
muon_momentum = 0.95  # in [0, 1): Muon's Nesterov momentum
muon_weight_decay = 0.0  # >= 0: Muon's decoupled weight decay, times its rate
# time: seconds of training, evaluation and checkpointing excluded
time_budget = 0.0  # > 0: end the run after this long, the schedule decaying over it (max_iters still caps the run)
target_val_loss = 0.0  # > 0: record the time and tokens it takes to reach this val loss at an evaluation; 0 = off
stop_at_target = False  # and end the run there
# system
backend = ''  # torch.distributed backend; '' picks nccl on CUDA, gloo on CPU
device = 'cuda' if torch.cuda.is_available() else 'cpu'  # 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'bfloat16' if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else (
    'float16' if torch.cuda.is_available() else 'float32')  # autocast dtype; float16 adds a GradScaler
compile = torch.cuda.is_available()  # torch.compile the model
seed = 1337  # in [0, 2**32 - 1], numpy's range
# -----------------------------------------------------------------------------
config = configure(globals())

# Values that torch or numpy would reject with a traceback, or accept and train wrongly, are refused up front.
if optimizer not in OPTIMIZERS:
    raise ValueError(f"optimizer={optimizer!r} is not known; use 'adamw' or 'muon'")
if init_from not in ('scratch', 'resume'):
    raise ValueError(f"init_from={init_from!r} is not known; use 'scratch' or 'resume'")
if lr_schedule not in ('cosine', 'vaswani', 'constant'):
    raise ValueError(f"lr_schedule={lr_schedule!r} is not known; use 'cosine', 'vaswani' or 'constant'")
for _name, _ok, _range in [
        *[(k, config[k] >= 1, 'at least 1') for k in ('batch_size', 'block_size', 'gradient_accumulation_steps',
                                                    'eval_interval', 'log_interval', 'eval_iters')],
        *[(k, config[k] >= 0, 'at least 0') for k in ('max_iters', 'warmup_iters', 'lr_decay_iters', 'weight_decay')],
        ('learning_rate', learning_rate > 0, 'above 0'), ('beta1', 0 <= beta1 < 1, 'in [0, 1)'),
        ('beta2', 0 <= beta2 < 1, 'in [0, 1)'), ('grad_clip', grad_clip >= 0, 'at least 0 (0 turns clipping off)'),
        ('min_lr', 0 <= min_lr <= learning_rate, f'in [0, learning_rate={learning_rate}]'),
        ('seed', 0 <= seed <= 2**32 - 1, 'in [0, 2**32 - 1]'), ('muon_lr', muon_lr > 0, 'above 0'),
        ('muon_momentum', 0 <= muon_momentum < 1, 'in [0, 1)'),
        ('muon_weight_decay', muon_weight_decay >= 0, 'at least 0'),
        ('time_budget', time_budget >= 0, 'at least 0 (0 turns it off)'),
        ('target_val_loss', target_val_loss >= 0, 'at least 0 (0 turns it off)')]:
    if not _ok:  # (a NaN fails every comparison, so it is refused too)
        raise ValueError(f"{_name}={config[_name]!r} must be {_range}")
if lr_schedule == 'vaswani' and warmup_iters < 1:
    raise ValueError("lr_schedule='vaswani' needs warmup_iters >= 1 (its peak is at the end of warmup)")
if lr_schedule == 'cosine' and 0 < lr_decay_iters < warmup_iters:
    raise ValueError(f"lr_decay_iters={lr_decay_iters} must be at least warmup_iters={warmup_iters} (the cosine "
                     "decays after the warmup), or 0 to decay until max_iters")

# -----------------------------------------------------------------------------
# processes and devices
device_type = check_device(device)  # 'cuda' for 'cuda:1'; a one-line exit for an unusable device
ctx = autocast(device_type, dtype)  # the forward pass's mixed precision (and a one-line exit for a bad dtype)
ddp = 'RANK' in os.environ  # torchrun sets RANK, LOCAL_RANK and WORLD_SIZE
if ddp:  # the process group is joined further down, once every process has checked its inputs
    rank, local_rank, world_size = (int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'))
    if device_type == 'cuda':
        device = f'cuda:{local_rank}'
        torch.cuda.set_device(device)
else:
    rank, local_rank, world_size = 0, 0, 1
master = rank == 0  # the one process that prints, logs and writes checkpoints
log = print if master else (lambda *args, **kwargs: None)
if gradient_accumulation_steps % world_size:
    raise ValueError(f"gradient_accumulation_steps={gradient_accumulation_steps} is the global count and must be "
                     f"divisible by the {world_size} processes; make it a multiple of {world_size}")
accum_steps = gradient_accumulation_steps // world_size  # this process's micro-steps per optimizer step

# Per-rank seeds give each process its own dropout masks; DDP copies rank 0's initial weights to all.
torch.manual_seed(seed + rank)
np.random.seed((seed + rank) % 2**32)
random.seed(seed + rank)
if device_type == 'cuda':
    # TF32 matmuls: ~fp32 accuracy for training at several times the speed on Ampere and later.
    torch.set_float32_matmul_precision('high')

# -----------------------------------------------------------------------------
# resume: the checkpoint fixes the architecture, block_size included, so read it before the data.
# Everything up to the out_dir section below only reads: a failure leaves out_dir as it was.
ckpt = None
ARCH_KEYS = [k for k in GPTConfig().to_dict() if k not in ('vocab_size', 'dropout', 'label_smoothing')]
START_OVER = "or start a new run in another --out_dir (or replace this one with --overwrite=True)"
if init_from == 'resume':
    ckpt_path = os.path.join(out_dir, 'last.pt')
    if not os.path.exists(ckpt_path):
        raise FileNotFoundError(f"init_from='resume' but {ckpt_path} does not exist; point --out_dir at an earlier "
                                f"run or start one with --init_from=scratch")
    try:  # weights_only: a checkpoint is data and can never run code
        ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=True)
        needed = ('model', 'model_args', 'optimizer', 'scaler', 'iter_num', 'best_val_loss', 'tokenizer', 'rng',
                  'sampler', 'train_time')
        if not isinstance(ckpt, dict) or any(k not in ckpt for k in needed):
            raise ValueError('training state missing')
        ckpt['model_args'] = GPTConfig.from_dict(ckpt['model_args']).to_dict()  # checked, completed if older
        if not isinstance(ckpt['optimizer'], list):  # written before Muon, by AdamW alone
            ckpt['optimizer'], ckpt['config']['optimizer'] = [ckpt['optimizer']], 'adamw'
    except Exception as e:
        raise ValueError(f"cannot resume from {ckpt_path} ({type(e).__name__}: {' '.join(str(e).split())[:100]}); "
                         f"it is damaged or not a train.py checkpoint: restore it from a copy, {START_OVER}") from e
    changed = [f'{k}={ckpt["model_args"][k]!r}' for k in ARCH_KEYS if ckpt['model_args'][k] != globals()[k]]
    for k in ARCH_KEYS:  # dropout and label_smoothing stay settable: they shape training, not the weights
        globals()[k] = config[k] = ckpt['model_args'][k]
    if changed:
        log(f"resume: the architecture comes from the checkpoint ({', '.join(changed)})")

# -----------------------------------------------------------------------------
# data: flat token files memory-mapped (the OS pages in only the windows we read)
meta_path = os.path.join(data_dir, 'meta.json')
meta = tokenizer.read_meta(data_dir)  # checked there: vocab_size, dtype and the splits' token counts
vocab_size, token_dtype, split_meta = meta['vocab_size'], np.dtype(meta['dtype']), meta['splits']


def open_split(split):
    path = os.path.join(data_dir, f'{split}.bin')
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing; rerun python prepare.py --out_dir={data_dir}")
    n, rest = divmod(os.path.getsize(path), token_dtype.itemsize)
    if rest or n != split_meta[split]['tokens']:
        raise ValueError(f"{path} holds {os.path.getsize(path)} bytes, not the {split_meta[split]['tokens']} "
                         f"{token_dtype} tokens meta.json describes; rerun prepare.py --out_dir={data_dir}")
    if n <= block_size:  # a window needs block_size inputs plus one target
        raise ValueError(f"{path} has {n} tokens, too few for block_size={block_size}; "
                         f"use --block_size={max(n - 1, 1)} or less, or prepare more data")
    # One memmap for the whole run: its pages are clean file cache the OS reclaims at will.
    data = np.memmap(path, dtype=token_dtype, mode='r')
    top = int(data.max())  # one pass at startup: an id past the vocabulary would fail deep inside the embedding
    if top >= vocab_size:
        raise ValueError(f"{path} holds token id {top} but {meta_path} says vocab_size={vocab_size}; they are not "
                         f"from the same prepare.py run: rerun python prepare.py --out_dir={data_dir}")
    return data


train_data, val_data = open_split('train'), open_split('val')
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size


def get_batch(data, offsets):
    """Windows starting at offsets -> inputs and next-token targets, (B, block_size) int64 each."""
    offsets = offsets.tolist()
    x = torch.from_numpy(np.stack([data[i:i + block_size] for i in offsets]).astype(np.int64))
    y = torch.from_numpy(np.stack([data[i + 1:i + 1 + block_size] for i in offsets]).astype(np.int64))
    if device_type == 'cuda':  # pinned memory makes the copy asynchronous: it overlaps the GPU's work
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


# Training windows: one generator with the same seed on every process draws the whole global batch
# each step, and each process takes its own rows, so processes never share a window and the data
# order does not depend on how many there are. Its state goes into checkpoints.
sampler = torch.Generator().manual_seed(seed)
# Evaluation windows are drawn once, from a fixed seed: every evaluation (and every run on the same
# data, whatever its seed) scores the same text, so the numbers are comparable, not noisy.
EVAL_SEED = 0
eval_offsets = {split: torch.randint(len(data) - block_size, (eval_iters, batch_size),
                                     generator=torch.Generator().manual_seed(EVAL_SEED))
                for split, data in (('train', train_data), ('val', val_data))}

# -----------------------------------------------------------------------------
# model, optimizer, grad scaler
model_args = dict(vocab_size=vocab_size, dropout=dropout, label_smoothing=label_smoothing,
                  **{k: globals()[k] for k in ARCH_KEYS})
if ckpt is not None and ckpt['model_args']['vocab_size'] != vocab_size:
    raise ValueError(f"vocabulary mismatch: {data_dir} was prepared with vocab_size={vocab_size} but the model in "
                     f"{out_dir}/last.pt has {ckpt['model_args']['vocab_size']}; resume on the data it was trained on "
                     f"{START_OVER}")
tok_state = tokenizer.state_from_dir(data_dir)
if ckpt is not None and ckpt['tokenizer'] != tok_state:
    raise ValueError(f"tokenizer mismatch: {data_dir} was tokenized differently from the data the model in "
                     f"{out_dir}/last.pt was trained on; resume on that data {START_OVER}")
gptconf = GPTConfig.from_dict(model_args)
if dry_run:  # everything is checked that can fail before training starts (sweep.py checks each run this way)
    with torch.device('meta'):  # shapes only: no memory, no time
        model = GPT(gptconf)
    print(json.dumps({'config': config, 'params': model.num_params(), 'tokens_per_iter': tokens_per_iter,
                      'flops_per_token': model.flops_per_token()}))
    raise SystemExit(0)
model = GPT(gptconf)
if ckpt is not None:
    try:
        model.load_state_dict(ckpt['model'])
    except (RuntimeError, TypeError) as e:  # torch's message lists every tensor: its first line says enough
        raise ValueError(f"cannot resume from {out_dir}/last.pt: its weights do not fit its model_args "
                         f"({str(e).splitlines()[0][:120]}); it is damaged or was edited: restore it from a copy, "
                         f"{START_OVER}") from None
model.to(device)
raw_model = model  # the plain module: its state_dict has no '_orig_mod.' or 'module.' prefixes
optimizers = configure_optimizers(raw_model, optimizer, learning_rate, (beta1, beta2), weight_decay, muon_lr,
                                  muon_momentum, muon_weight_decay, device_type)  # [AdamW] or [AdamW, Muon]
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))  # fp16 gradients underflow without it
iter_num, best_val_loss, train_time = 0, float('inf'), 0.0  # train_time: seconds of training steps so far
if ckpt is not None:
    if ckpt['config']['optimizer'] != optimizer:
        raise ValueError(f"{out_dir}/last.pt was trained with optimizer={ckpt['config']['optimizer']!r}; resume with "
                         f"--optimizer={ckpt['config']['optimizer']} {START_OVER}")
    for opt, state in zip(optimizers, ckpt['optimizer'], strict=True):
        opt.load_state_dict(state)
    if ckpt['scaler'] is not None and scaler.is_enabled():
        scaler.load_state_dict(ckpt['scaler'])
    iter_num, best_val_loss, train_time = ckpt['iter_num'], ckpt['best_val_loss'], ckpt['train_time']
    sampler.set_state(ckpt['sampler']['train'])
start_iter = iter_num

# -----------------------------------------------------------------------------
# learning-rate schedule


def get_lr(step, progress):
    """AdamW's learning rate for optimizer step number `step` (1-based), when the decay is `progress` (from
    decay_progress) of the way through."""
    if lr_schedule == 'vaswani':
        # Vaswani et al. 2017, eq. 3: d_model^-0.5 * min(step^-0.5, step * warmup^-1.5). We drop the
        # d_model^-0.5 factor and normalise so the peak (at step == warmup_iters) equals learning_rate:
        # linear warmup, then decay as 1/sqrt(step). For the paper's d_model=512, warmup=4000: 7.0e-4.
        return learning_rate * min(math.sqrt(warmup_iters / step), step / warmup_iters)
    # linear warmup (Adam's early moment estimates are noisy), then constant or a cosine (SGDR) down to min_lr;
    # the min is the warmup until it ends, and keeps a time-based cosine (already under way) continuous
    warm = learning_rate * step / warmup_iters if step <= warmup_iters else learning_rate
    if lr_schedule == 'constant':
        return warm
    return min(warm, min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr))


def decay_progress(step, seconds):
    """How far the decay is, in [0, 1]: the fraction of the steps from warmup's end to lr_decay_iters (or
    max_iters), or with a time_budget the fraction of it spent after `seconds` of training if that is further:
    the rate reaches min_lr when the budget runs out, whatever the machine's speed."""
    decay_iters = lr_decay_iters or max_iters
    steps = (step - warmup_iters) / max(decay_iters - warmup_iters, 1)
    return min(max(steps, seconds / time_budget if time_budget else 0.0, 0.0), 1.0)


# -----------------------------------------------------------------------------
# evaluation, checkpoints, logging
val_bytes_per_token = split_meta['val']['bytes'] / split_meta['val']['tokens']


@torch.no_grad()
def evaluate():
    """Mean cross-entropy on the fixed train and val windows (split across processes)."""
    eval_model.eval()
    out = {}
    for split, data in (('train', train_data), ('val', val_data)):
        total = torch.zeros(2, device=device)  # sum of batch losses, number of batches
        for k in range(rank, eval_iters, world_size):
            X, Y = get_batch(data, eval_offsets[split][k])
            with ctx:
                _, loss = eval_model(X, Y)  # in eval mode: plain cross-entropy, no label smoothing
            total[0] += loss.float()
            total[1] += 1
        if ddp:
            dist.all_reduce(total)
        out[split] = (total[0] / total[1]).item()
    eval_model.train()
    return out


def rng_states():
    """Every process's RNG states (collective under DDP); lists indexed by rank."""
    np_state = np.random.get_state()
    mine = {'python': random.getstate(),
            'numpy': (np_state[0], np_state[1].tolist(), *np_state[2:]),  # plain values: weights_only loads them
            'torch': torch.get_rng_state(),
            'cuda': torch.cuda.get_rng_state() if device_type == 'cuda' else None}
    everyone = [mine]
    if ddp:
        everyone = [None] * world_size
        dist.all_gather_object(everyone, mine)
    return {k: [s[k] for s in everyone] for k in mine}


def restore_rng(states):
    if len(states['torch']) != world_size:
        log(f"resume: the checkpoint was written by {len(states['torch'])} processes, this run has {world_size}; "
            f"the data order is unaffected, dropout masks differ from an uninterrupted run")
    if rank >= len(states['torch']):
        return  # keep this process's fresh seed
    random.setstate(states['python'][rank])
    name, keys, *rest = states['numpy'][rank]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(states['torch'][rank])
    if device_type == 'cuda' and states['cuda'][rank] is not None:
        torch.cuda.set_rng_state(states['cuda'][rank])


def share(error):
    """End every process if rank 0 failed alone (error: rank 0's exception, or None): rank 0 raises it (the
    exception hook prints it), the others exit quietly, and none is left waiting at a collective for it."""
    if ddp:
        failed = torch.tensor(float(error is not None), device=device)
        dist.broadcast(failed, 0)
        if failed.item():
            dist.destroy_process_group()
            if error is None:
                raise SystemExit(1)
    if error is not None:
        raise error


saved_iter = iter_num if ckpt is not None else None  # the iteration last.pt holds


def save_checkpoint(names):
    """Write the full training state to out_dir/<name> for each name, atomically (all processes call)."""
    global saved_iter
    rng = rng_states()
    error = None
    if master:
        state = {'model': raw_model.state_dict(), 'model_args': gptconf.to_dict(),
                 'optimizer': [opt.state_dict() for opt in optimizers],
                 'scaler': scaler.state_dict() if scaler.is_enabled() else None, 'iter_num': iter_num,
                 'best_val_loss': best_val_loss, 'train_time': train_time, 'config': config, 'tokenizer': tok_state,
                 'meta': meta, 'rng': rng, 'sampler': {'train': sampler.get_state(), 'seed': seed}, 'version': 1}
        for name in names:
            path = os.path.join(out_dir, name)
            try:
                with rundir.atomic_open(path, 'wb') as f:  # a failure leaves the previous file as it was
                    torch.save(state, f)
            except (OSError, RuntimeError) as e:
                cause = e.__context__ if isinstance(e, RuntimeError) else e  # torch.save wraps a failed write
                if isinstance(cause, (SystemExit, KeyboardInterrupt)):
                    raise cause from None  # a second Ctrl-C during the write
                if not isinstance(cause, OSError):
                    raise
                cause.filename = cause.filename or path
                held = f" (iteration {saved_iter})" if name == 'last.pt' and saved_iter is not None else ''
                intact = f"the previous {name}{held} is intact" if os.path.exists(path) else f"no {name} was written"
                can_resume = os.path.exists(os.path.join(out_dir, 'last.pt'))
                resume = ', continue with --init_from=resume' if can_resume else ''
                error = OSError(f"{describe(cause)}; {intact}{resume}")  # "the disk is full (out/last.pt): free ..."
                break
    share(error)  # rank 0 could not save: every process stops
    if 'last.pt' in names:
        saved_iter = iter_num  # on every process: they must agree on whether a final save is due


def record(rec):
    try:
        metrics_file.write(json.dumps(rec) + '\n')
    except OSError as e:  # a full disk: name the file
        e.filename = e.filename or metrics_path
        raise
    if wandb_log:
        wandb.log({f"{rec['kind']}/{k}": v for k, v in rec.items() if k not in ('kind', 'iter')}, step=rec['iter'])


# -----------------------------------------------------------------------------
# out_dir: rank 0 takes it for this run, then every process learns whether it could (see share)
if ddp:
    dist.init_process_group(backend=backend or ('nccl' if device_type == 'cuda' else 'gloo'))
metrics_path = os.path.join(out_dir, 'metrics.jsonl')
error = None
if master and not eval_only:  # eval_only prints and leaves out_dir alone
    try:
        run_lock = rundir.lock(out_dir)  # ours until this process exits: a second run here is refused, naming us
        found = rundir.run_files(out_dir)
        if init_from == 'scratch' and found and not overwrite:
            raise ValueError(f"{out_dir} already holds a run ({', '.join(found)}): continue it with "
                             f"--init_from=resume, or start over with --overwrite=True (replaces it) or another "
                             f"--out_dir")
        kept = []  # resuming: the records up to the checkpoint; later ones (a crash's, a finished run's end) go
        if init_from == 'resume' and os.path.exists(metrics_path):
            kept = [r for r in rundir.read_metrics(metrics_path)
                    if r['iter'] <= iter_num and r['kind'] not in ('done', 'diverged')]
        if wandb_log:  # started before any file is written, so that a missing login costs nothing
            try:
                import wandb
                wandb.init(project=wandb_project, name=wandb_run_name, config=config, dir=out_dir)
            except Exception as e:  # not installed, not logged in, no network
                raise ValueError(f"wandb_log=True but wandb could not start ({type(e).__name__}: "
                                 f"{' '.join(str(e).split())[:120]}); install it and run `wandb login`, set "
                                 "WANDB_MODE=offline, or pass --wandb_log=False") from e
        with rundir.atomic_open(metrics_path, 'w') as f:
            f.writelines(json.dumps(r) + '\n' for r in kept)
        if init_from == 'scratch':  # with --overwrite, the old run's checkpoints go with its metrics
            for name in rundir.CHECKPOINTS:
                with suppress(FileNotFoundError):
                    os.remove(os.path.join(out_dir, name))
        metrics_file = open(metrics_path, 'a', buffering=1)  # line-buffered: plots can follow a live run
    except Exception as e:
        error = e
share(error)
if compile:
    log('compiling the model (takes a minute)...')
    model = torch.compile(model)
eval_model = model  # evaluation runs outside DDP: nothing to synchronise
if ddp:
    model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None)

flops_per_token = raw_model.flops_per_token()  # for MFU: model FLOPs achieved / the device's peak
peak, peak_label = 1.0, ''
if master:
    with torch.random.fork_rng(devices=[]):  # a measuring matmul must not shift the run's random numbers
        peak, peak_label = peak_flops(device_type, dtype)
log(f"{raw_model.num_params() / 1e6:.2f}M parameters | {tokens_per_iter:,} tokens per step "
    f"({world_size} process{'es' if world_size > 1 else ''} x {accum_steps} micro-steps x {batch_size} x {block_size}) "
    f"| {device} {dtype} | peak {peak / 1e12:.2f} TFLOP/s ({peak_label})")
if ckpt is not None:
    restore_rng(ckpt['rng'])  # last: building the model above consumed random numbers
    log(f"resumed from {out_dir}/last.pt at iteration {iter_num}")
    del ckpt

stop_signal = None


def on_signal(signum, frame):
    global stop_signal
    if stop_signal is not None:  # asked twice: stop now, without a checkpoint
        if master:  # what last.pt holds, read from it: this may interrupt a save just as it replaced last.pt
            last = os.path.join(out_dir, 'last.pt')
            held = (f"holds iteration {torch.load(last, map_location='cpu', mmap=True, weights_only=True)['iter_num']}"
                    if os.path.exists(last) else "was not written")
            print(f"stopped at once without saving; {last} {held}", file=sys.stderr)
        raise SystemExit(130)  # as an interrupted program exits
    stop_signal = signum
    log(f"\n{signal.Signals(signum).name}: finishing this step, then saving {out_dir}/last.pt")


signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGTERM, on_signal)


# -----------------------------------------------------------------------------
# training loop: each pass evaluates when due, then takes one optimizer step
t_log, iters_since_log, sec_per_iter = time.time(), 0, None
elapsed = train_time  # rank 0's training seconds, as every process knows them: they set the rate and the end
out_of_time, at_target = time_budget > 0 and elapsed >= time_budget, False  # a resumed run may have none left
end_reason = None  # why the run ended, once it has (a Ctrl-C is not an end: the run can resume)
while True:
    due = iter_num % eval_interval == 0 or iter_num == max_iters or out_of_time
    if eval_only or (due and not (iter_num == start_iter and start_iter > 0)):  # a resume point is already scored
        losses = evaluate()
        val_loss = losses['val']
        bpb = val_loss / math.log(2) / val_bytes_per_token  # nats/token -> bits/byte
        ppl = math.exp(val_loss) if val_loss < 700 else float('inf')
        log(f"eval {iter_num}: train loss {losses['train']:.4f}, val loss {val_loss:.4f}, "
            f"val ppl {ppl:.2f}, val bpb {bpb:.4f}")
        if master and not eval_only:
            record({'kind': 'eval', 'iter': iter_num, 'tokens': iter_num * tokens_per_iter, 'time': train_time,
                    'train_loss': losses['train'], 'val_loss': val_loss, 'val_ppl': ppl, 'val_bpb': bpb})
        if eval_only:
            break
        if iter_num > 0:
            # time-to-target: the first evaluation at or below it (best_val_loss, checkpointed, is still above it)
            if target_val_loss and val_loss <= target_val_loss < best_val_loss:
                log(f"target val loss {target_val_loss} reached at iteration {iter_num}: {train_time:.1f}s of "
                    f"training, {iter_num * tokens_per_iter:,} tokens")
                if master:
                    record({'kind': 'target', 'iter': iter_num, 'tokens': iter_num * tokens_per_iter,
                            'time': train_time, 'val_loss': val_loss, 'target_val_loss': target_val_loss})
                at_target = stop_at_target
            names = ['last.pt'] if always_save_checkpoint else []
            if val_loss < best_val_loss:
                best_val_loss = val_loss
                names.append('best.pt')
            if names:
                save_checkpoint(names)
                log(f"saved {' and '.join(names)} to {out_dir}")
        t_log, iters_since_log = time.time(), 0  # keep evaluation out of the step timings
    if iter_num >= max_iters or out_of_time or at_target:
        end_reason = 'target' if at_target else 'time_budget' if out_of_time else 'max_iters'
        break

    # one optimizer step over the global batch
    t_step = time.time()
    lr = get_lr(iter_num + 1, decay_progress(iter_num + 1, elapsed))
    for opt in optimizers:  # Muon's rate follows the same schedule, scaled to its own peak
        for group in opt.param_groups:
            group['lr'] = lr * muon_lr / learning_rate if isinstance(opt, Muon) else lr
    offsets = torch.randint(len(train_data) - block_size, (gradient_accumulation_steps, batch_size), generator=sampler)
    offsets = offsets[rank * accum_steps:(rank + 1) * accum_steps]  # this process's rows of the global batch
    X, Y = get_batch(train_data, offsets[0])
    loss_sum = torch.zeros((), device=device)
    for micro_step in range(accum_steps):
        last_micro = micro_step == accum_steps - 1
        # DDP all-reduces gradients in backward: only worth doing once they are fully accumulated
        with model.no_sync() if ddp and not last_micro else nullcontext():
            with ctx:
                _, loss = model(X, Y)
                loss = loss / accum_steps  # the mean over micro-steps, not the sum
            if not last_micro:
                X, Y = get_batch(train_data, offsets[micro_step + 1])  # read ahead while the device computes
            scaler.scale(loss).backward()
        loss_sum += loss.detach().float()
    # one small exchange per step: the global mean loss, whether any process was asked to stop, rank 0's clock
    status = torch.stack([loss_sum, torch.tensor(float(stop_signal is not None), device=device),
                          torch.tensor(train_time + time.time() - t_step if master else 0.0, device=device)])
    if ddp:
        dist.all_reduce(status)
    loss_value, stop, elapsed = status.tolist()
    loss_value, stop = loss_value / world_size, stop > 0
    if not math.isfinite(loss_value):
        if master:
            record({'kind': 'diverged', 'iter': iter_num + 1, 'tokens': (iter_num + 1) * tokens_per_iter,
                    'time': train_time + time.time() - t_step, 'loss': loss_value})
        if ddp:
            dist.destroy_process_group()
        raise ValueError(f"step {iter_num + 1}: the loss is {loss_value}; stopped before the update, "
                         + (f"{out_dir}/last.pt still holds iteration {saved_iter}" if saved_iter is not None
                            else "no checkpoint was written") +
                         " - lower --learning_rate, raise --warmup_iters or set --grad_clip")
    if grad_clip > 0:
        for opt in optimizers:
            scaler.unscale_(opt)  # clip the true gradients, not the fp16-scaled ones
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip)
    for opt in optimizers:
        scaler.step(opt)  # with fp16, skips the step if the gradients overflowed
    scaler.update()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    iter_num += 1
    iters_since_log += 1
    train_time += time.time() - t_step
    out_of_time = time_budget > 0 and elapsed >= time_budget
    if out_of_time:
        log(f"time budget of {time_budget:g}s of training reached at iteration {iter_num}")

    if iter_num % log_interval == 0 or iter_num == max_iters or stop:
        now = time.time()
        dt = (now - t_log) / iters_since_log
        t_log, iters_since_log = now, 0
        if iter_num - start_iter > log_interval:  # the first interval holds compilation and warm-up
            sec_per_iter = dt if sec_per_iter is None else 0.9 * sec_per_iter + 0.1 * dt
        tok_s = tokens_per_iter / dt
        if master:
            mfu = flops_per_token * tok_s / (peak * world_size)
            left = (max_iters - iter_num) * sec_per_iter if sec_per_iter else 0
            left = min(left, max(time_budget - train_time, 0)) if time_budget else left
            eta = f", eta {time.strftime('%H:%M:%S', time.gmtime(left))}" if sec_per_iter else ''
            print(f"iter {iter_num}/{max_iters}: loss {loss_value:.4f}, lr {lr:.2e}, {dt * 1000:.1f} ms/iter, "
                  f"{tok_s:,.0f} tok/s, mfu {mfu * 100:.2f}%{eta}", flush=True)
            record({'kind': 'train', 'iter': iter_num, 'tokens': iter_num * tokens_per_iter, 'time': train_time,
                    'loss': loss_value, 'lr': lr, 'ms': dt * 1000, 'tok_s': tok_s, 'mfu': mfu})
    if stop:
        save_checkpoint(['last.pt'])
        log(f"stopped at iteration {iter_num}; saved {out_dir}/last.pt (continue with --init_from=resume)")
        break

if not eval_only and saved_iter != iter_num:
    save_checkpoint(['last.pt'])
    log(f"saved last.pt to {out_dir}")
if master and not eval_only:
    if end_reason:  # after the last checkpoint: 'done' means everything is saved
        record({'kind': 'done', 'iter': iter_num, 'tokens': iter_num * tokens_per_iter, 'time': train_time,
                'reason': end_reason})
    metrics_file.close()
    if wandb_log:
        wandb.finish()
if ddp:
    dist.destroy_process_group()
