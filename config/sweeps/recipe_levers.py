"""The demo's recipe against the one before it and the AdamW recipe before that, 3 seeds each at 300 steps (a fixed
step count: the losses do not depend on the machine's load, so two runs can share the cores), on the recipe
study's data. Also the demo's recipe without QK-norm (Arcee's shape in transformers and llama.cpp) and with SwiGLU
instead of squared ReLU (Qwen3's), to weigh what the default gives up for each export target.
compare.py then gives each group's exact whole-split val bpb and its time to the AdamW baseline's final loss."""
#   (data/recipe as config/sweeps/recipe.py prepares it)
#   python sweep.py config/sweeps/recipe_levers.py --parallel=2       # two 1-thread runs at a time, ~55 min
#   python compare.py --runs=out-sweeps/recipe_levers --reference=adamw
base = 'config/train_tinystories_cpu.py'
out_dir = 'out-sweeps/recipe_levers'
overrides = {'data_dir': 'data/recipe', 'max_iters': 300, 'lr_decay_iters': 300, 'warmup_iters': 50,
             'eval_interval': 25, 'eval_iters': 10, 'log_interval': 25}
# every run names its whole recipe, so none depends on what the demo config currently adopts
_arch = {'qk_norm': True, 'act': 'relu2', 'mlp_hidden': 480}
_new = {**_arch, 'optimizer': 'muon', 'muon_lr': 0.02, 'learning_rate': 8e-3, 'min_lr': 8e-4, 'tie_weights': False,
        'embedding_lr': 0.03, 'head_lr': 8e-3, 'normuon': True, 'lr_schedule': 'wsd', 'cooldown_frac': 0.5}
_off = {'tie_weights': True, 'embedding_lr': 0.0, 'head_lr': 0.0, 'normuon': False, 'lr_schedule': 'cosine'}
runs = {
    'adamw': {**_off, 'optimizer': 'adamw', 'learning_rate': 2e-3, 'min_lr': 2e-4, 'qk_norm': False, 'act': 'swiglu',
              'mlp_hidden': 320},
    'muon_0.04': {**_off, **_arch, 'optimizer': 'muon', 'muon_lr': 0.04, 'learning_rate': 2e-3, 'min_lr': 2e-4},
    'demo': _new,
    'demo_no_qk_norm': {**_new, 'qk_norm': False},
    'demo_swiglu': {**_new, 'act': 'swiglu', 'mlp_hidden': 320},
}
grid = {'seed': [1, 2, 3]}
