"""
The optimizers train.py steps (and bench.py times): AdamW for every parameter, nanoGPT's recipe, or Muon for
the weight matrices inside the transformer blocks with AdamW for everything else (embeddings, the output head,
norm gains, biases), the split Muon's authors prescribe [1]. Either way a list: [AdamW] or [AdamW, Muon].

Muon [1] keeps a momentum of the gradient like SGD, but steps along an orthogonalised version of it: the
matrix with the same singular vectors and all singular values ~1, found by a few Newton-Schulz iterations.
Every direction of a weight matrix then moves at the same rate, however small its gradient; embeddings and
the head (lookups and a classifier, not hidden-layer maps) and vectors stay with AdamW [2].

Every parameter group keeps its peak rate ('peak_lr'); the schedule (get_lr) scales all of them alike, and step()
applies the rates, clips and steps: train.py and bench.py step the same way.

References:
 [1] Jordan et al. 2024, Muon: An optimizer for hidden layers in neural networks (kellerjordan.github.io/posts/muon);
     torch.optim.Muon (torch >= 2.9) implements it
 [2] Loshchilov & Hutter 2019, Decoupled Weight Decay Regularization (AdamW)
 [3] Loshchilov & Hutter 2017, SGDR: Stochastic Gradient Descent with Warm Restarts (cosine decay)
 [4] Vaswani et al. 2017, Attention Is All You Need, eq. 3 (warmup, then 1/sqrt(step))
 [5] Hu et al. 2024, MiniCPM (warmup-stable-decay); Hägele et al. 2024, Scaling Laws and Compute-Optimal Training
     Beyond Fixed Training Durations (a linear cooldown over the last part of the run)
 [6] Li et al. 2025, NorMuon: Making Muon more efficient and scalable
 [7] Karpathy 2025, nanochat; Jordan et al. 2024, modded-nanogpt (the embedding and the head at rates of their own)
"""
import inspect
import math

import torch

OPTIMIZERS = ('adamw', 'muon')
SCHEDULES = ('cosine', 'wsd', 'vaswani', 'constant')


def newton_schulz(G, steps=5, eps=1e-7, dtype=torch.float32, coefficients=(3.4445, -4.7750, 2.0315)):
    """Orthogonalise G (m, n) approximately: U S V^T -> U S' V^T, each singular value pushed towards 1 (into about
    [0.7, 1.2], the tiniest less far), by the quintic iteration X <- a X + (b A + c A^2) X with A = X X^T on the
    smaller side. The coefficients favour speed over exact convergence [1]; iteration, coefficients and step
    count are torch.optim.Muon's, in any dtype."""
    X = G.to(dtype)
    tall = G.size(0) > G.size(1)
    if tall:
        X = X.T
    X = X / X.norm().clamp(min=eps)  # the Frobenius norm bounds the spectral norm: every singular value <= 1
    a, b, c = coefficients
    for _ in range(steps):
        A = X @ X.T
        X = torch.addmm(X, torch.addmm(A, A, A, beta=b, alpha=c), X, beta=a)
    return X.T if tall else X


class Muon(torch.optim.Muon):
    """torch.optim.Muon with its Newton-Schulz iteration in ns_dtype. The library runs it in bfloat16: right on
    GPUs, slow on CPUs without bf16 arithmetic (most of them), where fp32 is both faster and more accurate.
    With ns_dtype=torch.bfloat16 a step equals the library's bit for bit (tested), and the state is the
    library's, so either one loads the other's checkpoints. normuon=True adds NorMuon's per-neuron step [6]."""

    def __init__(self, params, lr, momentum, weight_decay, ns_dtype=torch.float32, normuon=False):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.ns_dtype, self.normuon = ns_dtype, normuon

    @torch.no_grad()
    def step(self, closure=None):
        assert closure is None, 'Muon here takes no closure'
        for group in self.param_groups:
            lr, mu = group['lr'], group['momentum']
            for p in group['params']:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault('momentum_buffer', torch.zeros_like(p.grad))
                buf.lerp_(p.grad, 1 - mu)  # buf = mu * buf + (1 - mu) * grad
                update = p.grad.lerp(buf, mu) if group['nesterov'] else buf
                update = newton_schulz(update, group['ns_steps'], group['eps'], self.ns_dtype, group['ns_coefficients'])
                if self.normuon:
                    update = self.even_neurons(p, update)
                p.mul_(1 - lr * group['weight_decay'])  # decoupled weight decay [2]
                # a tall (m > n) matrix's orthogonal update has entries of rms 1/sqrt(m); sqrt(m/n) restores 1/sqrt(n)
                p.add_(update, alpha=-lr * max(1.0, p.size(0) / p.size(1)) ** 0.5)

    def even_neurons(self, p, update, beta2=0.95):
        """NorMuon [6]: an orthogonal update still moves some neurons far more than others. Divide each of them
        (a row of a tall or square p, a column of a wide one, as modded-nanogpt does) by its recent RMS, an EMA
        as Adam's second moment, then restore the update's norm."""
        dim, update = 1 if p.size(0) >= p.size(1) else 0, update.float()  # (the EMA in fp32 after a bf16 iteration)
        v = self.state[p].setdefault('neuron_second_moment', torch.zeros_like(update.mean(dim, keepdim=True)))
        v.lerp_(update.square().mean(dim, keepdim=True), 1 - beta2)
        scaled = update * v.clamp(min=1e-10).rsqrt()
        return scaled * (update.norm() / scaled.norm().clamp(min=1e-10))


def configure_optimizers(model, optimizer, learning_rate, betas, weight_decay, muon_lr, muon_momentum,
                         muon_weight_decay, device_type, embedding_lr=0.0, head_lr=0.0, normuon=False):
    """The optimizers for model's trainable parameters, each parameter in exactly one group: [AdamW], or for
    optimizer='muon' [AdamW, Muon] with Muon taking the 2-D weights of model.blocks. embedding_lr > 0 gives the token
    embedding (tied: with the head) an AdamW group of its own at that rate, head_lr > 0 an untied head, both without
    weight decay [7]: a table's row moves only when its token occurs, so it takes a larger rate than the matrices
    every token passes through, and decay at that rate would shrink rare tokens' rows between their updates.
    Every setting is checked here, in one line naming it, before any optimizer exists."""
    tied = model.lm_head.weight is model.wte.weight
    for broken, message in (
            (optimizer not in OPTIMIZERS, f"optimizer={optimizer!r} is not known; use 'adamw' or 'muon'"),
            (not learning_rate > 0, f'learning_rate={learning_rate} must be above 0'),  # (a NaN fails every test)
            *[(not 0 <= b < 1, f'beta{i}={b} must be in [0, 1)') for i, b in enumerate(betas, 1)],
            (not weight_decay >= 0, f'weight_decay={weight_decay} must be at least 0'),
            (not muon_lr > 0, f'muon_lr={muon_lr} must be above 0 (e.g. 0.02)'),
            (not 0 <= muon_momentum < 1, f'muon_momentum={muon_momentum} must be in [0, 1) (e.g. 0.95)'),
            (not muon_weight_decay >= 0, f'muon_weight_decay={muon_weight_decay} must be at least 0'),
            (not embedding_lr >= 0, f'embedding_lr={embedding_lr} must be at least 0 (0: learning_rate)'),
            (not head_lr >= 0, f'head_lr={head_lr} must be at least 0 (0: learning_rate)'),
            (head_lr > 0 and tied, f'head_lr={head_lr} needs an untied head (tie_weights=False); a tied head is the '
             'embedding, whose rate is embedding_lr')):
        if broken:
            raise ValueError(message)
    params = [p for p in model.parameters() if p.requires_grad]
    matrices = [p for p in model.blocks.parameters() if p.requires_grad and p.dim() == 2] if optimizer == 'muon' else []
    own = [(p, lr) for p, lr in ((model.wte.weight, embedding_lr), (model.lm_head.weight, head_lr)) if lr > 0]
    rest = [p for p in params if id(p) not in set(map(id, matrices + [p for p, _ in own]))]
    # decay only matrices (weights, embeddings); shrinking biases and norm gains towards 0 does not help
    groups = [{'params': [p for p in rest if p.dim() >= 2], 'weight_decay': weight_decay},
              {'params': [p for p in rest if p.dim() < 2], 'weight_decay': 0.0},
              *({'params': [p], 'weight_decay': 0.0, 'lr': lr} for p, lr in own)]
    fused = device_type == 'cuda' and 'fused' in inspect.signature(torch.optim.AdamW).parameters
    optimizers = [torch.optim.AdamW(groups, lr=learning_rate, betas=tuple(betas), **({'fused': True} if fused else {}))]
    if matrices:  # bf16 Newton-Schulz where the hardware has fast bf16 (CUDA), fp32 elsewhere
        optimizers.append(Muon(matrices, lr=muon_lr, momentum=muon_momentum, weight_decay=muon_weight_decay,
                               ns_dtype=torch.bfloat16 if device_type == 'cuda' else torch.float32, normuon=normuon))
    for opt in optimizers:
        for group in opt.param_groups:
            group['peak_lr'] = group['lr']  # the schedule scales every group's own peak alike
    return optimizers


def get_lr(step, seconds, learning_rate, min_lr=0.0, warmup_iters=0, decay_iters=1, schedule='cosine',
           time_budget=0.0, cooldown_frac=0.5):
    """AdamW's rate at optimizer step `step` (1-based) after `seconds` of training (every group's rate is scaled
    alike, see step()): a linear warmup over warmup_iters steps (Adam's early moment estimates are noisy), then
    - 'cosine' [3]: down to min_lr at decay_iters, or with a time_budget when that many seconds are spent if that
      comes first: the rate then reaches its floor when the budget runs out, whatever the machine's speed;
    - 'wsd' [5] (warmup-stable-decay): over the same span, the peak rate until the last cooldown_frac of it, then a
      straight line down to min_lr: most of the loss falls in the cooldown, so the run spends longer at the peak;
    - 'vaswani' [4]: d_model^-0.5 * min(step^-0.5, step * warmup^-1.5) without the d_model factor, normalised to
      peak at learning_rate when the warmup ends, i.e. a decay as 1/sqrt(step); 'constant': no decay.
    Bad settings are a one-line ValueError: call it once before training to check them."""
    for broken, message in (
            (schedule not in SCHEDULES, f"lr_schedule={schedule!r} is not known; use {', '.join(map(repr, SCHEDULES))}"),
            (not learning_rate > 0, f'learning_rate={learning_rate} must be above 0'),
            (not 0 <= min_lr <= learning_rate, f'min_lr={min_lr} must be in [0, learning_rate={learning_rate}]'),
            (warmup_iters < 0, f'warmup_iters={warmup_iters} must be at least 0'),
            (schedule == 'vaswani' and warmup_iters < 1, "lr_schedule='vaswani' needs warmup_iters >= 1 (its peak is "
             "at the end of warmup)"),
            (schedule in ('cosine', 'wsd') and decay_iters < warmup_iters, f'lr_decay_iters={decay_iters} must be at '
             f'least warmup_iters={warmup_iters} (the decay follows the warmup), or 0 to decay until max_iters'),
            (not 0 < cooldown_frac <= 1, f'cooldown_frac={cooldown_frac} must be in (0, 1]'),
            (not time_budget >= 0, f'time_budget={time_budget} must be at least 0 (0 turns it off)')):
        if broken:
            raise ValueError(message)
    if schedule == 'vaswani':
        return learning_rate * min(math.sqrt(warmup_iters / step), step / warmup_iters)
    warm = learning_rate * step / warmup_iters if step <= warmup_iters else learning_rate
    if schedule == 'constant':
        return warm
    progress = max((step - warmup_iters) / max(decay_iters - warmup_iters, 1), seconds / time_budget if time_budget else 0)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == 'wsd':
        left = min(1.0, (1.0 - progress) / cooldown_frac)
    else:
        left = 0.5 * (1.0 + math.cos(math.pi * progress))
    # the min is the warmup until it ends, and keeps a time-based decay (already under way) continuous
    return min(warm, min_lr + left * (learning_rate - min_lr))


def step(optimizers, scaler, params, lr_scale, grad_clip):
    """One update from the accumulated gradients: every group at lr_scale times its peak rate, gradients clipped to
    global norm grad_clip (0: not clipped), the scaler's fp16 bookkeeping, and the gradients cleared."""
    for opt in optimizers:
        for group in opt.param_groups:
            group['lr'] = group['peak_lr'] * lr_scale
    if grad_clip > 0:
        for opt in optimizers:
            scaler.unscale_(opt)  # clip the true gradients, not the fp16-scaled ones
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    for opt in optimizers:
        scaler.step(opt)  # with fp16, skips the step if the gradients overflowed
    scaler.update()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
