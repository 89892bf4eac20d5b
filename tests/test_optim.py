"""Properties of optim.py: which optimizer takes which parameter at which rate, our Muon step is torch.optim.Muon's,
Newton-Schulz orthogonalises, NorMuon evens the neurons, and the schedules' shapes."""
import pytest
import torch

from model import GPT, GPTConfig
import optim
from optim import Muon, configure_optimizers, get_lr, newton_schulz

torch.set_num_threads(1)


def build(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**dict(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32), **kw}))


def configure(model, optimizer, device_type='cpu'):
    return configure_optimizers(model, optimizer, 1e-3, (0.9, 0.95), 0.1, 0.02, 0.95, 0.0, device_type)


def test_adamw_alone_takes_every_parameter_and_decays_only_matrices():
    """optimizer='adamw': one AdamW, every parameter in exactly one group; only >= 2-D ones are decayed."""
    model = build(bias=True, norm='layernorm', pos='learned')
    [opt] = configure(model, 'adamw')
    decay, no_decay = opt.param_groups
    assert decay['weight_decay'] == 0.1 and no_decay['weight_decay'] == 0.0
    assert all(p.dim() >= 2 for p in decay['params']) and all(p.dim() < 2 for p in no_decay['params'])
    assert {id(p) for p in model.parameters()} == {id(p) for p in decay['params'] + no_decay['params']}
    assert len(decay['params']) + len(no_decay['params']) == len(list(model.parameters()))


@pytest.mark.parametrize('tie_weights', [True, False])
def test_muon_takes_the_block_matrices_and_adamw_the_rest(tie_weights):
    """optimizer='muon': Muon gets exactly the 2-D weights inside the blocks; AdamW the embeddings and the head
    (decayed) and the norm gains, QK-norm gains and biases (not decayed); no parameter is in both or neither."""
    model = build(bias=True, norm='layernorm', pos='learned', qk_norm=True, tie_weights=tie_weights)
    adamw, muon = configure(model, 'muon')
    names = {id(p): n for n, p in model.named_parameters()}
    [group] = muon.param_groups
    assert sorted(names[id(p)] for p in group['params']) == sorted(
        n for n, p in model.named_parameters() if n.startswith('blocks.') and p.dim() == 2)
    assert group['lr'] == 0.02 and group['momentum'] == 0.95 and muon.ns_dtype == torch.float32
    decay, no_decay = adamw.param_groups
    assert sorted(names[id(p)] for p in decay['params']) == (
        ['wpe.weight', 'wte.weight'] if tie_weights else ['lm_head.weight', 'wpe.weight', 'wte.weight'])
    assert all(p.dim() == 1 for p in no_decay['params']) and any('q_norm' in names[id(p)] for p in no_decay['params'])
    everything = [id(p) for opt in (adamw, muon) for g in opt.param_groups for p in g['params']]
    assert sorted(everything) == sorted(id(p) for p in model.parameters())
    assert configure(model, 'muon', 'cuda')[1].ns_dtype == torch.bfloat16  # the library's dtype where it is fast


@pytest.mark.parametrize('shape', [(96, 32), (32, 48)])
def test_our_muon_step_with_a_bf16_iteration_equals_torch_optim_muon(shape):
    """Five steps with momentum, Nesterov and weight decay on a tall and a wide matrix: bit for bit the library's
    weights and momentum buffers, so on CUDA we run exactly torch.optim.Muon."""
    torch.manual_seed(0)
    ours, theirs = torch.nn.Parameter(torch.randn(shape)), torch.nn.Parameter(torch.randn(shape))
    theirs.data.copy_(ours.data)
    opt_ours = Muon([ours], lr=0.05, momentum=0.9, weight_decay=0.1, ns_dtype=torch.bfloat16)
    opt_theirs = torch.optim.Muon([theirs], lr=0.05, momentum=0.9, weight_decay=0.1)
    for _ in range(5):
        grad = torch.randn(shape)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        opt_ours.step()
        opt_theirs.step()
    assert torch.equal(ours, theirs)
    assert torch.equal(opt_ours.state[ours]['momentum_buffer'], opt_theirs.state[theirs]['momentum_buffer'])
    opt_theirs.load_state_dict(opt_ours.state_dict())  # the same state layout: checkpoints load either way


@pytest.mark.parametrize('shape', [(48, 16), (16, 48)])
def test_newton_schulz_keeps_the_singular_vectors_and_moves_singular_values_towards_one(shape):
    """NS(U S V^T) = U S' V^T: U^T NS(G) V is diagonal, with S' inside [0.6, 1.25] for singular values spread over
    a factor of 10; and the result does not depend on the scale of G."""
    torch.manual_seed(0)
    U, _, Vh = torch.linalg.svd(torch.randn(shape), full_matrices=False)
    G = U @ torch.diag(torch.logspace(0, 1, 16)) @ Vh  # singular values 1..10
    core = U.T @ newton_schulz(G) @ Vh.T
    torch.testing.assert_close(core, torch.diag(core.diagonal()), atol=1e-4, rtol=0)
    assert core.diagonal().min() > 0.6 and core.diagonal().max() < 1.25
    torch.testing.assert_close(newton_schulz(G * 1e4), newton_schulz(G), atol=1e-5, rtol=0)


def test_embedding_and_head_rates_get_groups_of_their_own_without_decay_and_follow_the_schedule():
    """embedding_lr and head_lr: the token embedding and an untied head each in a group at its own peak rate and no
    weight decay, everything else where it was; a step at lr_scale s sets every group to s times its own peak."""
    model = build(tie_weights=False)
    adamw, muon = configure_optimizers(model, 'muon', 8e-3, (0.9, 0.95), 0.1, 0.02, 0.95, 0.0, 'cpu', embedding_lr=0.03,
                                       head_lr=5e-3)
    decay, no_decay, emb, head = adamw.param_groups
    assert emb['params'] == [model.wte.weight] and head['params'] == [model.lm_head.weight]
    assert (emb['lr'], head['lr'], emb['weight_decay'], head['weight_decay']) == (0.03, 5e-3, 0.0, 0.0)
    assert decay['params'] == [] and decay['lr'] == 8e-3  # untied, both tables have their own groups
    everything = [id(p) for opt in (adamw, muon) for g in opt.param_groups for p in g['params']]
    assert sorted(everything) == sorted(id(p) for p in model.parameters())
    loss = model(torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16)))[1]
    loss.backward()
    optim.step([adamw, muon], torch.amp.GradScaler('cpu', enabled=False), model.parameters(), 0.5, 1.0)
    assert [g['lr'] for g in adamw.param_groups + muon.param_groups] == [4e-3, 4e-3, 0.015, 2.5e-3, 0.01]
    tied = build()  # the one matrix that is both embedding and head gets embedding_lr
    [adamw] = configure_optimizers(tied, 'adamw', 8e-3, (0.9, 0.95), 0.1, 0.02, 0.95, 0.0, 'cpu', embedding_lr=0.03)
    assert adamw.param_groups[2]['params'] == [tied.lm_head.weight] and adamw.param_groups[2]['lr'] == 0.03


@pytest.mark.parametrize('shape', [(96, 32), (32, 96)])
def test_normuon_evens_the_neurons_and_keeps_the_update_norm(shape):
    """NorMuon's first step: every neuron (row of a tall matrix, column of a wide one) of the update has the same
    RMS, and the update's Frobenius norm is the orthogonalised one's; with normuon=False the neurons differ."""
    torch.manual_seed(0)
    update = newton_schulz(torch.randn(shape) * torch.logspace(0, 2, shape[1]))  # uneven columns
    p = torch.nn.Parameter(torch.zeros(shape))
    evened = Muon([p], lr=0.02, momentum=0.95, weight_decay=0.0, normuon=True).even_neurons(p, update)
    dim = 1 if shape[0] >= shape[1] else 0
    rms = evened.square().mean(dim).sqrt()
    torch.testing.assert_close(rms, torch.full_like(rms, rms.mean().item()), rtol=1e-4, atol=0)
    torch.testing.assert_close(evened.norm(), update.norm())
    assert update.square().mean(dim).sqrt().std() > 0.05 * update.square().mean(dim).sqrt().mean()


def test_bad_optimizer_settings_raise_one_line_value_errors():
    model = build()
    for call in (lambda: configure(model, 'sgd'),
                 lambda: configure_optimizers(model, 'adamw', 1e-3, (0.9, 0.95), 0.1, 0.02, 0.95, 0.0, 'cpu',
                                              head_lr=1e-3),  # the head is tied
                 lambda: configure_optimizers(model, 'adamw', 1e-3, (0.9, 0.95), 0.1, 0.02, 0.95, 0.0, 'cpu',
                                              embedding_lr=-1.0),
                 lambda: configure_optimizers(model, 'muon', 1e-3, (0.9, 0.95), 0.1, 0.02, 1.0, 0.0, 'cpu'),
                 lambda: configure_optimizers(model, 'muon', 1e-3, (0.9, 0.95), 0.1, -0.02, 0.95, 0.0, 'cpu')):
        with pytest.raises(ValueError) as e:
            call()
        assert '\n' not in str(e.value)


def test_with_a_time_budget_the_cosine_reaches_min_lr_exactly_when_the_budget_runs_out():
    """The schedule as a function of the training seconds spent, not of real time: the cosine is halfway at half
    the budget and at min_lr at its end, whatever step the run has reached; warmup still ramps by steps; and
    decay_iters still ends the decay if it comes first."""
    lr = dict(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, decay_iters=10**9, time_budget=300.0)
    for step in (50, 5000):
        assert get_lr(step, 150.0, **lr) == pytest.approx(5.5e-4) and get_lr(step, 300.0, **lr) == pytest.approx(1e-4)
    assert get_lr(5, 1.0, **lr) == pytest.approx(5e-4)  # warmup
    lrs = [get_lr(11 + s, s, **lr) for s in range(0, 301, 5)]
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] == pytest.approx(1e-4)
    lr['decay_iters'] = 110
    assert get_lr(60, 30.0, **lr) == pytest.approx(5.5e-4) and get_lr(110, 30.0, **lr) == pytest.approx(1e-4)


def test_wsd_holds_the_peak_then_falls_in_a_straight_line_to_min_lr():
    """lr_schedule='wsd': warmup, the peak until the last cooldown_frac of the decay's span (steps, or the time
    budget if further), then linear to min_lr, reached exactly at the span's end."""
    lr = dict(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, decay_iters=110, schedule='wsd', cooldown_frac=0.4)
    assert get_lr(5, 0.0, **lr) == pytest.approx(5e-4)
    assert all(get_lr(s, 0.0, **lr) == pytest.approx(1e-3) for s in range(10, 71))  # progress up to 0.6
    tail = [get_lr(s, 0.0, **lr) for s in (80, 90, 100, 110, 200)]
    assert tail == pytest.approx([7.75e-4, 5.5e-4, 3.25e-4, 1e-4, 1e-4])
    timed = dict(lr, decay_iters=10**9, time_budget=100.0)
    assert [get_lr(500, t, **timed) for t in (50.0, 60.0, 80.0, 100.0)] == pytest.approx([1e-3, 1e-3, 5.5e-4, 1e-4])


def test_bad_schedule_settings_raise_one_line_value_errors():
    for kw in (dict(schedule='linear'), dict(min_lr=2e-3), dict(warmup_iters=20, decay_iters=10),
               dict(schedule='wsd', cooldown_frac=0.0), dict(schedule='wsd', warmup_iters=20, decay_iters=10),
               dict(schedule='vaswani', warmup_iters=0), dict(time_budget=-1.0)):
        with pytest.raises(ValueError) as e:
            get_lr(1, 0.0, **{'learning_rate': 1e-3, **kw})
        assert '\n' not in str(e.value)
