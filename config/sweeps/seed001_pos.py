"""Seed 001's position study at CPU scale: how much does a model lose without any positional information
on TinyStories (seed 001: surprisingly little)? RoPE against learned and sinusoidal absolute embeddings and
none, with the CPU demo's model and data, 250 steps each (1M tokens)."""
# Sized to ~10 minutes of a 2-core CPU for the four runs; loss per step does not depend on the machine's load.
# A causal model without positions can still count (attention over a growing prefix), so 'none' is not blind.
#   python sweep.py config/sweeps/seed001_pos.py
base = 'config/train_tinystories_cpu.py'
out_dir = 'out-sweeps/seed001_pos'
overrides = {'data_dir': 'data/tinystories-demo', 'max_iters': 250, 'lr_decay_iters': 0, 'warmup_iters': 25,
             'eval_interval': 50, 'log_interval': 10,
             # seed 001's recipe on the demo's shape: AdamW, SwiGLU, no QK-norm (the demo trains its own recipe)
             'optimizer': 'adamw', 'act': 'swiglu', 'mlp_hidden': 320, 'qk_norm': False,
             'learning_rate': 2e-3, 'min_lr': 2e-4, 'tie_weights': True, 'embedding_lr': 0.0, 'head_lr': 0.0,
             'normuon': False, 'lr_schedule': 'cosine'}
grid = {'pos': ['rope', 'learned', 'sinusoidal', 'none']}
