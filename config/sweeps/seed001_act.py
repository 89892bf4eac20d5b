"""Seed 001's activation study at CPU scale: SwiGLU against SiLU, GeGLU, GELU and
squared ReLU at equal parameter counts.
Does the gate earn its place when it costs a third of the MLP's width? The CPU demo's model and data, 250
steps each (1M tokens)."""
# Equal parameters: a gated MLP has three n_embd x hidden matrices, a plain one two, so the gated width is 2/3
# of the plain one's: 3 x 128 x 320 = 2 x 128 x 480 = 122,880 per block (320 is the demo's own SwiGLU width).
# Sized to ~12 minutes of a 2-core CPU for the five runs; loss per step does not depend on the machine's load.
#   python sweep.py config/sweeps/seed001_act.py
base = 'config/train_tinystories_cpu.py'
out_dir = 'out-sweeps/seed001_act'
overrides = {'data_dir': 'data/tinystories-demo', 'max_iters': 250, 'lr_decay_iters': 0, 'warmup_iters': 25,
             'eval_interval': 50, 'log_interval': 10,
             # seed 001's recipe on the demo's shape: AdamW, SwiGLU, no QK-norm (the demo trains its own recipe)
             'optimizer': 'adamw', 'act': 'swiglu', 'mlp_hidden': 320, 'qk_norm': False,
             'learning_rate': 2e-3, 'min_lr': 2e-4, 'tie_weights': True, 'embedding_lr': 0.0, 'head_lr': 0.0,
             'normuon': False, 'lr_schedule': 'cosine'}
runs = {'swiglu': {'act': 'swiglu', 'mlp_hidden': 320},
        'geglu': {'act': 'geglu', 'mlp_hidden': 320},
        'silu': {'act': 'silu', 'mlp_hidden': 480},
        'gelu': {'act': 'gelu', 'mlp_hidden': 480},
        'relu2': {'act': 'relu2', 'mlp_hidden': 480}}  # squared ReLU (Primer; modded-nanogpt's choice)
