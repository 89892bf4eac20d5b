"""Recipe levers screened together at fixed steps (300 each, one seed; losses per step do not depend on the machine's
load): today's recipe (Muon + QK-norm + squared ReLU) at the better rates (Muon 0.02, AdamW 8e-3), then four levers
together: an untied head with the embedding's and the head's own AdamW rates, NorMuon, a WSD schedule (half the
decay a linear cooldown) and x0 mixing; each left out again, and the rates around them."""
#   python sweep.py config/sweeps/recipe_screen.py --parallel=2       # two 1-thread runs at a time
#   python compare.py --runs=out-sweeps/recipe_screen --reference=base
base = 'config/train_tinystories_cpu.py'
out_dir = 'out-sweeps/recipe_screen'
overrides = {'data_dir': 'data/recipe', 'max_iters': 300, 'lr_decay_iters': 300, 'warmup_iters': 50,
             'eval_interval': 100, 'eval_iters': 10, 'log_interval': 25, 'muon_lr': 0.02, 'learning_rate': 8e-3,
             'min_lr': 8e-4}
_all = {'tie_weights': False, 'embedding_lr': 0.03, 'head_lr': 8e-3, 'normuon': True, 'lr_schedule': 'wsd',
        'cooldown_frac': 0.5, 'x0_mix': True}
runs = {
    'base': {},
    'all': _all,
    'no_untied': {**_all, 'tie_weights': True, 'embedding_lr': 0.0, 'head_lr': 0.0},
    'tied_emb0.016': {**_all, 'tie_weights': True, 'embedding_lr': 0.016, 'head_lr': 0.0},
    'no_normuon': {**_all, 'normuon': False},
    'no_wsd': {**_all, 'lr_schedule': 'cosine'},
    'no_x0_mix': {**_all, 'x0_mix': False},
    'emb0.1': {**_all, 'embedding_lr': 0.1},
    'emb0.01': {**_all, 'embedding_lr': 0.01},
    'head0.016': {**_all, 'head_lr': 0.016},
    'head0.004': {**_all, 'head_lr': 0.004},
    'muon0.04': {**_all, 'muon_lr': 0.04},
    'muon0.01': {**_all, 'muon_lr': 0.01},
    'cool0.3': {**_all, 'cooldown_frac': 0.3},
    'cool0.7': {**_all, 'cooldown_frac': 0.7},
    'adam0.016': {**_all, 'learning_rate': 0.016, 'min_lr': 1.6e-3},
}
