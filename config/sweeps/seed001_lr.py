"""Seed 001's learning-rate sweep at CPU scale: does the loss diverge near lr=1e-2, is 1e-3 best, and does
3e-4 converge slower? The CPU demo's model and data, 250 steps each (1M tokens), the floor of the cosine
schedule a tenth of the peak."""
# Sized to ~10 minutes of a 2-core CPU for the four runs; loss per step does not depend on the machine's load.
#   python sweep.py config/sweeps/seed001_lr.py
base = 'config/train_tinystories_cpu.py'
out_dir = 'out-sweeps/seed001_lr'
overrides = {'data_dir': 'data/tinystories-demo', 'max_iters': 250, 'lr_decay_iters': 0, 'warmup_iters': 25,
             'eval_interval': 50, 'log_interval': 10,
             # seed 001's recipe on the demo's shape: AdamW, SwiGLU, no QK-norm (the demo trains its own recipe)
             'optimizer': 'adamw', 'act': 'swiglu', 'mlp_hidden': 320, 'qk_norm': False, 'tie_weights': True,
             'embedding_lr': 0.0, 'head_lr': 0.0, 'normuon': False, 'lr_schedule': 'cosine'}
runs = {f'learning_rate={lr}': {'learning_rate': lr, 'min_lr': floor}
        for lr, floor in ((3e-4, 3e-5), (1e-3, 1e-4), (3e-3, 3e-4), (1e-2, 1e-3))}
target_val_loss = 4.0
