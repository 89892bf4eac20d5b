"""
Train a GPT on the tokens prepare.py wrote, on one CPU, one GPU, or many GPUs.

    python train.py config/train_tinystories_cpu.py    # the CPU demo (make demo)
    python train.py config/seed001.py --max_iters=2000 # a config file, then --key=value overrides
    python train.py --out_dir=out --init_from=resume   # continue out/last.pt exactly where it stopped
    torchrun --standalone --nproc_per_node=8 train.py config/train_tinystories.py   # DDP: nccl on GPUs, gloo on CPUs

A resumed run's losses equal those of a run never interrupted (weights, optimizers, scaler, RNG and data order come
back). Ctrl-C or SIGTERM finishes the step, saves out_dir/last.pt and exits (twice: at once). out_dir belongs to one
run: its process holds a lock on it, a fresh run refuses another run's directory unless --overwrite=True, and every
file is replaced atomically. gradient_accumulation_steps counts micro-steps over ALL processes, so the global batch
is the config's, not the machine count's. Only rank 0 writes; on several machines (torchrun --nnodes=2
--node_rank=0|1 --master_addr=IP ...) out_dir must be on a filesystem they share, for a resume.
"""
import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import data
import optim
import rundir
import tokenizer
from configurator import configure
from device import DEVICE, DTYPE, autocast, check_device, peak_flops
from model import GPT, GPTConfig

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
wandb_log = False  # wandb is imported only when True (WANDB_MODE=offline works)
wandb_project = 'tinystories-gpt'
wandb_run_name = 'run'
# data
batch_size = 32  # sequences per micro-step, per process
gradient_accumulation_steps = 4  # micro-steps per optimizer step, summed over all processes
# model: every GPTConfig field but vocab_size (data_dir/meta.json sets it) is a setting here, with the default and
# the meaning model.py gives it: --block_size=512, --n_layer=12, --pos=learned, --act=relu2, --qk_norm=True, ...
globals().update({k: v for k, v in GPTConfig().to_dict().items() if k != 'vocab_size'})
# optimizers and the learning-rate schedule (optim.py checks them)
optimizer = 'adamw'  # 'adamw': AdamW for everything | 'muon': Muon for the blocks' weight matrices, AdamW for the rest
learning_rate = 1e-3  # AdamW's peak rate, reached at the end of warmup
max_iters = 5000  # optimizer steps
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # max global gradient norm; 0 disables clipping
lr_schedule = 'cosine'  # 'cosine' | 'wsd' | 'vaswani' | 'constant' (see optim.get_lr)
warmup_iters = 200
lr_decay_iters = 0  # cosine or wsd reaches min_lr here (at least warmup_iters); 0 means max_iters
min_lr = 1e-4  # where the decay ends, in [0, learning_rate]
cooldown_frac = 0.5  # lr_schedule='wsd': the last fraction of the decay's span, a straight line down to min_lr
embedding_lr = 0.0  # > 0: the token embedding's own AdamW peak rate, without weight decay; 0: learning_rate
head_lr = 0.0  # > 0: an untied output head's own AdamW peak rate, without weight decay; 0: learning_rate
muon_lr = 0.02  # Muon's peak rate; the schedule scales it as AdamW's
muon_momentum = 0.95  # Muon's Nesterov momentum
muon_weight_decay = 0.0  # Muon's decoupled weight decay, times its rate
normuon = False  # True: NorMuon's per-neuron normalisation of Muon's update (optim.Muon.even_neurons)
# time: seconds of training, evaluation and checkpointing excluded
time_budget = 0.0  # > 0: end the run after this long, the schedule decaying over it (max_iters still caps the run)
target_val_loss = 0.0  # > 0: record when the val loss reaches this (rundir.time_to_target); 0 = off
stop_at_target = False  # and end the run at the first evaluation at or below it
# system
backend = ''  # torch.distributed backend; '' picks nccl on CUDA, gloo on CPU
device = DEVICE  # 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = DTYPE  # autocast dtype: 'float32', 'bfloat16' or 'float16' (which adds a GradScaler)
compile = torch.cuda.is_available()  # torch.compile the model
seed = 1337
# -----------------------------------------------------------------------------
config = configure(globals())
for name, ok, want in [  # train.py's own settings; optim.py, model.py and data.py check theirs
        *[(k, config[k] >= 1, 'at least 1') for k in ('batch_size', 'gradient_accumulation_steps', 'eval_interval',
                                                      'log_interval', 'eval_iters')],
        ('max_iters', max_iters >= 0, 'at least 0'), ('grad_clip', grad_clip >= 0, 'at least 0 (0 turns clipping off)'),
        ('init_from', init_from in ('scratch', 'resume'), "'scratch' or 'resume'"), ('seed', 0 <= seed <= 2**32 - 1,
         'in [0, 2**32 - 1]'), ('target_val_loss', target_val_loss >= 0, 'at least 0 (0 turns it off)')]:
    if not ok:  # (a NaN fails every comparison, so it is refused too)
        raise ValueError(f"{name}={config[name]!r} must be {want}")
lr_args = dict(learning_rate=learning_rate, min_lr=min_lr, warmup_iters=warmup_iters, schedule=lr_schedule,
               decay_iters=lr_decay_iters or max(max_iters, warmup_iters), time_budget=time_budget,
               cooldown_frac=cooldown_frac)
optim.get_lr(1, 0.0, **lr_args)  # the schedule's own checks, before anything is read or written

# processes and devices
device_type, ctx = check_device(device), autocast(check_device(device), dtype)  # 'cuda' for 'cuda:1'; mixed precision
ddp = 'RANK' in os.environ  # torchrun sets RANK, LOCAL_RANK and WORLD_SIZE
rank, local_rank, world_size = (int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE')) if ddp else (0, 0, 1)
if ddp and device_type == 'cuda':
    device = f'cuda:{local_rank}'
    torch.cuda.set_device(device)
master = rank == 0  # the one process that prints, logs and writes checkpoints
log = print if master else (lambda *args, **kwargs: None)
if gradient_accumulation_steps % world_size:
    raise ValueError(f"gradient_accumulation_steps={gradient_accumulation_steps} is the global count and must be "
                     f"divisible by the {world_size} processes; make it a multiple of {world_size}")
accum_steps = gradient_accumulation_steps // world_size  # this process's micro-steps per optimizer step
torch.manual_seed(seed + rank)  # each process its own dropout masks; DDP copies rank 0's initial weights to all
torch.set_float32_matmul_precision('high')  # TF32 matmuls on a GPU: ~fp32 accuracy at several times the speed

# -----------------------------------------------------------------------------
# data: flat token files, memory-mapped (the OS pages in only the windows we read), opened below for block_size
meta = data.read_meta(data_dir)
vocab_size, tok_state = meta['vocab_size'], tokenizer.state_from_dir(data_dir)
# One generator, seeded alike on every process, draws each step's global batch and each process takes its rows:
# the data order does not depend on how many there are. Its state goes into checkpoints.
sampler = torch.Generator().manual_seed(seed)

# -----------------------------------------------------------------------------
# model: a fresh one, or the checkpoint's, whose architecture (block_size included) is then the run's
START_OVER = "or start a new run in another --out_dir (or replace this one with --overwrite=True)"
ckpt = None
if init_from == 'resume':
    ckpt_path = os.path.join(out_dir, 'last.pt')
    if not os.path.exists(ckpt_path):
        raise FileNotFoundError(f"init_from='resume' but {ckpt_path} does not exist; point --out_dir at an earlier "
                                f"run or start one with --init_from=scratch")
    try:  # dropout and label_smoothing stay settable: they shape training, not the weights
        model, ckpt = GPT.from_checkpoint(ckpt_path, dropout=dropout, label_smoothing=label_smoothing)
        if missing := {'optimizer', 'scaler', 'iter_num', 'best_val_loss', 'tokenizer', 'rng', 'sampler',
                       'train_time', 'config'} - set(ckpt):
            raise ValueError(f"{ckpt_path} lacks the training state {sorted(missing)}")
        tokenizer.check_same(data_dir, ckpt['tokenizer'], ckpt_path)
    except (ValueError, OSError) as e:
        raise ValueError(f"cannot resume: {e}; {START_OVER}") from None
    gptconf = model.config
    changed = {k: v for k, v in gptconf.to_dict().items() if config.get(k, v) != v}  # the checkpoint's, not the flags'
    config.update(changed)
    log(f"resumed from {ckpt_path} at iteration {ckpt['iter_num']}" + (f"; its architecture: {changed}" if changed else ''))
else:
    gptconf = GPTConfig.from_dict({k: config[k] for k in GPTConfig().to_dict() if k != 'vocab_size'} |
                                  {'vocab_size': vocab_size})
block_size = gptconf.block_size
train_data = data.open_split(data_dir, 'train', vocab_size, block_size)  # before a model is built for block_size
val_data = data.open_split(data_dir, 'val', vocab_size, block_size)
# the evaluation windows, drawn once from seed 0: every evaluation, and every run on this data, scores the same text
eval_offsets = {split: torch.randint(len(d) - block_size, (eval_iters, batch_size),
                                     generator=torch.Generator().manual_seed(0))
                for split, d in (('train', train_data), ('val', val_data))}
if ckpt is None:
    with torch.device('meta') if dry_run else nullcontext():  # a dry run needs the shapes only
        model = GPT(gptconf)
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
if dry_run:  # everything that can fail before training is checked (sweep.py checks each run this way)
    print(json.dumps({'config': config, 'params': model.num_params(), 'tokens_per_iter': tokens_per_iter,
                      'flops_per_token': model.flops_per_token()}))
    raise SystemExit(0)
raw_model = model.to(device).train()  # the plain module: its state_dict has no '_orig_mod.' or 'module.' prefixes

# -----------------------------------------------------------------------------
# optimizers ([AdamW] or [AdamW, Muon]) and the grad scaler fp16 gradients need (they underflow without it)
optimizers = optim.configure_optimizers(raw_model, optimizer, learning_rate, (beta1, beta2), weight_decay, muon_lr,
                                        muon_momentum, muon_weight_decay, device_type, embedding_lr, head_lr, normuon)
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
iter_num, best_val_loss, train_time, evals = 0, float('inf'), 0.0, []  # train_time: seconds of training steps
if ckpt is not None:
    if ckpt['config']['optimizer'] != optimizer:
        raise ValueError(f"{out_dir}/last.pt was trained with optimizer={ckpt['config']['optimizer']!r}; resume with "
                         f"--optimizer={ckpt['config']['optimizer']} {START_OVER}")
    for opt, state in zip(optimizers, ckpt['optimizer'], strict=True):
        peaks = [g['peak_lr'] for g in opt.param_groups]
        opt.load_state_dict(state)
        for group, peak in zip(opt.param_groups, peaks):  # the peak rates are settings: this run's apply
            group['peak_lr'] = peak
    if ckpt['scaler'] is not None and scaler.is_enabled():
        scaler.load_state_dict(ckpt['scaler'])
    iter_num, best_val_loss, train_time = ckpt['iter_num'], ckpt['best_val_loss'], ckpt['train_time']
    sampler.set_state(ckpt['sampler']['train'])
    rng = {k: v[min(rank, len(v) - 1)] for k, v in ckpt['rng'].items()}  # this process's (another count: the last)
    torch.set_rng_state(rng['torch'])  # after building the model, which drew from it
    if device_type == 'cuda' and rng['cuda'] is not None:
        torch.cuda.set_rng_state(rng['cuda'])
start_iter, saved_iter = iter_num, iter_num if ckpt else None  # saved_iter: the iteration out_dir/last.pt holds


@torch.no_grad()
def evaluate():
    """Mean cross-entropy on the fixed train and val windows, in eval mode (no dropout, no label smoothing)."""
    eval_model.eval()
    out = {}
    for split, tokens in (('train', train_data), ('val', val_data)):
        losses = torch.zeros(eval_iters, device=device)  # each process scores its share; the sum gathers them
        for k in range(rank, eval_iters, world_size):
            with ctx:
                losses[k] = eval_model(*data.get_batch(tokens, eval_offsets[split][k], block_size, device))[1]
        if ddp:
            dist.all_reduce(losses)
        out[split] = losses.mean().item()
    eval_model.train()
    return out


def save_checkpoint(names):
    """Write the whole training state to out_dir/<name> for each name (every process calls: RNG states are
    gathered); a failure on rank 0 stops every process (share)."""
    global saved_iter
    rng = {'torch': torch.get_rng_state(), 'cuda': torch.cuda.get_rng_state() if device_type == 'cuda' else None}
    everyone = [rng] * world_size
    if ddp:
        dist.all_gather_object(everyone, rng)
    error = None
    if master:
        state = {'model': raw_model.state_dict(), 'model_args': raw_model.config.to_dict(),
                 'optimizer': [opt.state_dict() for opt in optimizers],
                 'scaler': scaler.state_dict() if scaler.is_enabled() else None, 'iter_num': iter_num,
                 'best_val_loss': best_val_loss, 'train_time': train_time, 'config': config, 'tokenizer': tok_state,
                 'meta': meta, 'rng': {k: [s[k] for s in everyone] for k in rng},
                 'sampler': {'train': sampler.get_state(), 'seed': seed}, 'version': 1}
        try:
            rundir.save(out_dir, names, lambda f: torch.save(state, f), saved_iter)
        except OSError as e:
            error = e
    saved_iter = iter_num if 'last.pt' in names and not error else saved_iter  # every process: a final save or not
    share(error)


def share(error):
    """Rank 0's error (its exception, or None) ends every process: rank 0 raises it (the exception hook prints it),
    the others exit quietly, and none is left waiting at a collective for it."""
    failed = [error is not None]
    if ddp:
        dist.broadcast_object_list(failed, 0)
    if error is not None:
        raise error
    if failed[0]:
        raise SystemExit(1)


def record(rec):  # rank 0 only
    metrics.write(json.dumps(rec) + '\n')
    if wandb_log:
        wandb.log({f"{rec['kind']}/{k}": v for k, v in rec.items() if k not in ('kind', 'iter')}, step=rec['iter'])


def on_signal(signum, frame):
    global stop_signal
    if stop_signal is not None:  # asked twice: stop now, without a checkpoint
        held = f"holds iteration {saved_iter}" if saved_iter is not None else "was not written"
        log(f"stopped at once without saving; {out_dir}/last.pt {held}", file=sys.stderr)
        raise SystemExit(130)  # as an interrupted program exits
    stop_signal = signum
    log(f"\n{signal.Signals(signum).name}: finishing this step, then saving {out_dir}/last.pt")


# -----------------------------------------------------------------------------
# out_dir: rank 0 takes it (starting wandb before any file is written), then every process learns if it could
if ddp:
    dist.init_process_group(backend=backend or ('nccl' if device_type == 'cuda' else 'gloo'))
error = None
if master and not eval_only:  # eval_only prints and leaves out_dir alone
    try:
        run_lock, kept = rundir.claim(out_dir, resume_at=iter_num if ckpt else None, overwrite=overwrite)
        evals = [r for r in kept if r['kind'] == 'eval']
        if wandb_log:
            try:
                import wandb
                wandb.init(project=wandb_project, name=wandb_run_name, config=config, dir=out_dir)
            except Exception as e:  # not installed, not logged in, no network
                raise ValueError(f"wandb_log=True but wandb could not start ({type(e).__name__}: {str(e)[:120]}); "
                                 "install it and run `wandb login`, set WANDB_MODE=offline, or --wandb_log=False") from e
        metrics = rundir.start_metrics(out_dir, kept, fresh=ckpt is None)
    except Exception as e:
        error = e
share(error)
eval_model = torch.compile(model) if compile else model  # evaluation runs outside DDP: nothing to synchronise
model = DDP(eval_model, device_ids=[local_rank] if device_type == 'cuda' else None) if ddp else eval_model
flops_per_token = raw_model.flops_per_token()  # for MFU: model FLOPs achieved / the device's peak
peak, peak_label = peak_flops(device_type, dtype) if master else (1.0, '')
log(f"{raw_model.num_params() / 1e6:.2f}M parameters | {tokens_per_iter:,} tokens per step ({world_size} "
    f"process{'es' if world_size > 1 else ''} x {accum_steps} micro-steps x {batch_size} x {block_size}) | {device} "
    f"{dtype}{' compiled' if compile else ''} | peak {peak / 1e12:.2f} TFLOP/s ({peak_label})")
stop_signal = None
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, on_signal)

# -----------------------------------------------------------------------------
# training loop: each pass evaluates when due, then takes one optimizer step
t_log, iters_since_log, sec_per_iter = time.time(), 0, None
elapsed = train_time  # rank 0's training seconds, as every process knows them: they set the rate and the end
out_of_time, at_target = time_budget > 0 and elapsed >= time_budget, False  # a resumed run may have none left
end_reason = None  # why the run ended, once it has (a Ctrl-C is not an end: the run can resume)
while True:
    due = iter_num % eval_interval == 0 or iter_num == max_iters or out_of_time
    if eval_only or (due and not (iter_num == start_iter > 0)):  # a resume point is already scored
        losses = evaluate()
        val_loss, tokens = losses['val'], iter_num * tokens_per_iter
        bpb = val_loss / math.log(2) / (meta['splits']['val']['bytes'] / meta['splits']['val']['tokens'])
        ppl = math.exp(val_loss) if val_loss < 700 else float('inf')
        log(f"eval {iter_num}: train loss {losses['train']:.4f}, val loss {val_loss:.4f}, "
            f"val ppl {ppl:.2f}, val bpb {bpb:.4f}")
        if eval_only:
            break
        evals.append({'kind': 'eval', 'iter': iter_num, 'tokens': tokens, 'time': train_time,
                      'train_loss': losses['train'], 'val_loss': val_loss, 'val_ppl': ppl, 'val_bpb': bpb})
        if master:
            record(evals[-1])
        if iter_num > 0:
            if target_val_loss and val_loss <= target_val_loss < best_val_loss:  # the first evaluation reaching it
                at_target = stop_at_target
                if master:
                    hit = {k: rundir.time_to_target(evals, target_val_loss, k) for k in ('time', 'tokens')}
                    print(f"target val loss {target_val_loss} reached by iteration {iter_num}: {hit['time']:.1f}s of "
                          f"training, {hit['tokens']:,.0f} tokens")
                    record({'kind': 'target', 'iter': iter_num, **hit, 'target_val_loss': target_val_loss})
            names = ['best.pt'] if val_loss < best_val_loss else []
            best_val_loss = min(val_loss, best_val_loss)
            names += ['last.pt'] if always_save_checkpoint else []  # last: saved_iter follows the file it names
            if names:
                save_checkpoint(names)
                log(f"saved {' and '.join(names)} to {out_dir}")
        t_log, iters_since_log = time.time(), 0  # keep evaluation out of the step timings
    if iter_num >= max_iters or out_of_time or at_target:
        end_reason = 'target' if at_target else 'time_budget' if out_of_time else 'max_iters'
        break

    # one optimizer step over the global batch
    t_step = time.time()
    lr = optim.get_lr(iter_num + 1, elapsed, **lr_args)
    offsets = torch.randint(len(train_data) - block_size, (gradient_accumulation_steps, batch_size), generator=sampler)
    offsets = offsets[rank * accum_steps:(rank + 1) * accum_steps]  # this process's rows of the global batch
    X, Y = data.get_batch(train_data, offsets[0], block_size, device)
    loss_sum = torch.zeros((), device=device)
    for micro_step in range(accum_steps):
        last_micro = micro_step == accum_steps - 1
        # DDP all-reduces gradients in backward: only worth doing once they are fully accumulated
        with model.no_sync() if ddp and not last_micro else nullcontext():
            with ctx:
                _, loss = model(X, Y)
                loss = loss / accum_steps  # the mean over micro-steps, not the sum
            if not last_micro:  # read ahead while the device computes
                X, Y = data.get_batch(train_data, offsets[micro_step + 1], block_size, device)
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
        held = f"{out_dir}/last.pt still holds iteration {saved_iter}" if saved_iter is not None else \
            "no checkpoint was written"
        raise ValueError(f"step {iter_num + 1}: the loss is {loss_value}; stopped before the update, {held} - lower "
                         f"--learning_rate, raise --warmup_iters or set --grad_clip")
    optim.step(optimizers, scaler, raw_model.parameters(), lr / learning_rate, grad_clip)
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
    metrics.close()
    if wandb_log:
        wandb.finish()
if ddp:
    dist.destroy_process_group()
