"""Seed 001's normalisation study at CPU scale: without normalisation, does the loss explode after a few
hundred steps? And the comparison seed 001 left as a TODO: pre-norm against post-norm, for RMSNorm and
LayerNorm. The CPU demo's model, data and learning rate, 250 steps each (1M tokens)."""
# Sized to ~10 minutes of a 2-core CPU for the five runs; loss per step does not depend on the machine's load.
# norm='none' has no position: without a normalisation, pre and post are the same network.
#   python sweep.py config/sweeps/seed001_norm.py
base = 'config/train_tinystories_cpu.py'
out_dir = 'out-sweeps/seed001_norm'
overrides = {'data_dir': 'data/tinystories-demo', 'max_iters': 250, 'lr_decay_iters': 0, 'warmup_iters': 25,
             'eval_interval': 50, 'log_interval': 10,
             # seed 001's recipe on the demo's shape: AdamW, SwiGLU, no QK-norm (the demo trains its own recipe)
             'optimizer': 'adamw', 'act': 'swiglu', 'mlp_hidden': 320, 'qk_norm': False,
             'learning_rate': 2e-3, 'min_lr': 2e-4, 'tie_weights': True, 'embedding_lr': 0.0, 'head_lr': 0.0,
             'normuon': False, 'lr_schedule': 'cosine'}
runs = {'rmsnorm-pre': {'norm': 'rmsnorm', 'norm_pos': 'pre'},
        'rmsnorm-post': {'norm': 'rmsnorm', 'norm_pos': 'post'},
        'layernorm-pre': {'norm': 'layernorm', 'norm_pos': 'pre'},
        'layernorm-post': {'norm': 'layernorm', 'norm_pos': 'post'},
        'no-norm': {'norm': 'none'}}
