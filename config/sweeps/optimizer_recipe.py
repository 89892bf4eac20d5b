"""Optimizers and recipes at CPU scale: how much sooner does Muon reach the AdamW demo's loss,
and what does each architecture switch (QK-norm, squared ReLU, zero-initialised output projections, logit
soft-capping) add on its own? Every run gets the same wall-clock budget of training, so a switch that
slows a step pays for it; compare the time-to-target column and the val loss vs time plot."""
# Wall-clock budgets need a quiet machine: 8 runs x 75 s of training, ~11 minutes with evaluation.
#   python sweep.py config/sweeps/optimizer_recipe.py
base = 'config/train_tinystories_cpu.py'
out_dir = 'out-sweeps/optimizer_recipe'
overrides = {'data_dir': 'data/tinystories-demo', 'time_budget': 75.0, 'max_iters': 100000, 'lr_decay_iters': 0,
             'warmup_iters': 25, 'eval_interval': 25, 'log_interval': 10,
             # the AdamW/SwiGLU model: every run names what it changes from it
             'optimizer': 'adamw', 'act': 'swiglu', 'mlp_hidden': 320, 'qk_norm': False, 'muon_lr': 0.04,
             'learning_rate': 2e-3, 'min_lr': 2e-4, 'tie_weights': True, 'embedding_lr': 0.0, 'head_lr': 0.0,
             'normuon': False, 'lr_schedule': 'cosine'}
runs = {'adamw': {'optimizer': 'adamw'},
        'muon': {'optimizer': 'muon'},
        'adamw+qk_norm': {'qk_norm': True},
        'adamw+relu2': {'act': 'relu2', 'mlp_hidden': 480},  # the SwiGLU MLP's parameters (see seed001_act.py)
        'adamw+zero_init': {'zero_init': True},
        'adamw+softcap': {'logit_softcap': 15.0},
        'muon+all': {'optimizer': 'muon', 'qk_norm': True, 'act': 'relu2', 'mlp_hidden': 480, 'zero_init': True,
                     'logit_softcap': 15.0},
        'recipe': {'optimizer': 'muon', 'qk_norm': True, 'act': 'relu2', 'mlp_hidden': 480}}
target_val_loss = 4.0
