"""The recipe's levers screened at fixed steps (300 each, one seed: losses per step do not depend on the machine's
load, so two runs share the cores): the recipe before the demo's (Muon + QK-norm + squared ReLU, tied, cosine) over a
grid of Muon's rate x the AdamW side's rate, then at the best pair each lever alone and all of them together: an
untied head with the embedding's and the head's own AdamW rates, NorMuon, a WSD schedule (the last half of the decay
a straight line down) and x0 mixing. config/sweeps/recipe_levers.py measures the chosen recipe with 3 seeds."""
#   (data/recipe as config/sweeps/recipe.py prepares it)
#   python sweep.py config/sweeps/recipe_screen.py --parallel=2       # two 1-thread runs at a time, ~1 h 40 min
#   python compare.py --runs=out-sweeps/recipe_screen --reference=muon0.04_adam0.002
base = 'config/train_tinystories_cpu.py'
out_dir = 'out-sweeps/recipe_screen'
overrides = {'data_dir': 'data/recipe', 'max_iters': 300, 'lr_decay_iters': 300, 'warmup_iters': 50,
             'eval_interval': 100, 'eval_iters': 10, 'log_interval': 25, 'optimizer': 'muon', 'qk_norm': True,
             'act': 'relu2', 'mlp_hidden': 480, 'tie_weights': True, 'embedding_lr': 0.0, 'head_lr': 0.0,
             'normuon': False, 'lr_schedule': 'cosine', 'x0_mix': False}
runs = {f'muon{m}_adam{a}': {'muon_lr': m, 'learning_rate': a, 'min_lr': a / 10}
        for m in (0.02, 0.04, 0.08) for a in (0.002, 0.004, 0.008)}
_best = runs['muon0.02_adam0.008']
_levers = {'untied': {'tie_weights': False, 'embedding_lr': 0.03, 'head_lr': 8e-3}, 'normuon': {'normuon': True},
           'wsd': {'lr_schedule': 'wsd', 'cooldown_frac': 0.5}, 'x0_mix': {'x0_mix': True}}
runs |= {name: {**_best, **lever} for name, lever in _levers.items()}
runs['all'] = {**_best, **{k: v for lever in _levers.values() for k, v in lever.items()}}
