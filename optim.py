"""
The optimizers train.py steps (and bench.py times): AdamW for every parameter, nanoGPT's recipe, or Muon for
the weight matrices inside the transformer blocks with AdamW for everything else (embeddings, the output head,
norm gains, biases), the split Muon's authors prescribe [1]. Either way a list: [AdamW] or [AdamW, Muon].

Muon [1] keeps a momentum of the gradient like SGD, but steps along an orthogonalised version of it: the
matrix with the same singular vectors and all singular values ~1, found by a few Newton-Schulz iterations.
Every direction of a weight matrix then moves at the same rate, however small its gradient; embeddings and
the head (lookups and a classifier, not hidden-layer maps) and vectors stay with AdamW [2].

References:
 [1] Jordan et al. 2024, Muon: An optimizer for hidden layers in neural networks (kellerjordan.github.io/posts/muon);
     torch.optim.Muon (torch >= 2.9) implements it
 [2] Loshchilov & Hutter 2019, Decoupled Weight Decay Regularization (AdamW)
"""
import inspect

import torch

OPTIMIZERS = ('adamw', 'muon')


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
    library's, so either one loads the other's checkpoints."""

    def __init__(self, params, lr, momentum, weight_decay, ns_dtype=torch.float32):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.ns_dtype = ns_dtype

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
                p.mul_(1 - lr * group['weight_decay'])  # decoupled weight decay [2]
                # a tall (m > n) matrix's orthogonal update has entries of rms 1/sqrt(m); sqrt(m/n) restores 1/sqrt(n)
                p.add_(update, alpha=-lr * max(1.0, p.size(0) / p.size(1)) ** 0.5)


def configure_optimizers(model, optimizer, learning_rate, betas, weight_decay, muon_lr, muon_momentum,
                         muon_weight_decay, device_type):
    """The optimizers for model's trainable parameters, each parameter in exactly one group: [AdamW], or for
    optimizer='muon' [AdamW, Muon] with Muon taking the 2-D weights of model.blocks."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r} is not known; use 'adamw' or 'muon'")
    if optimizer == 'muon' and not (muon_lr > 0 and 0 <= muon_momentum < 1 and muon_weight_decay >= 0):
        raise ValueError(f'muon_lr={muon_lr} must be > 0, muon_momentum={muon_momentum} in [0, 1) and '
                         f'muon_weight_decay={muon_weight_decay} >= 0; e.g. 0.02, 0.95 and 0')
    params = [p for p in model.parameters() if p.requires_grad]
    matrices = [p for p in model.blocks.parameters() if p.requires_grad and p.dim() == 2] if optimizer == 'muon' else []
    rest = [p for p in params if id(p) not in set(map(id, matrices))]
    # decay only matrices (weights, embeddings); shrinking biases and norm gains towards 0 does not help
    groups = [{'params': [p for p in rest if p.dim() >= 2], 'weight_decay': weight_decay},
              {'params': [p for p in rest if p.dim() < 2], 'weight_decay': 0.0}]
    fused = device_type == 'cuda' and 'fused' in inspect.signature(torch.optim.AdamW).parameters
    optimizers = [torch.optim.AdamW(groups, lr=learning_rate, betas=tuple(betas), **({'fused': True} if fused else {}))]
    if matrices:  # bf16 Newton-Schulz where the hardware has fast bf16 (CUDA), fp32 elsewhere
        optimizers.append(Muon(matrices, lr=muon_lr, momentum=muon_momentum, weight_decay=muon_weight_decay,
                               ns_dtype=torch.bfloat16 if device_type == 'cuda' else torch.float32))
    return optimizers
