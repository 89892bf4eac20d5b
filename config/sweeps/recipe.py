"""Does Muon with the architecture switches reach the AdamW recipe's quality sooner? The AdamW recipe against
Muon with the switches and each component alone on the AdamW recipe, 5 minutes of
training each (evaluation excluded), 3 seeds; the CPU demo's model on the three local TinyStories train files
with 5% held out. Then compare.py gives each recipe's exact val bpb and its time to the baseline's final loss."""
# On a quiet machine (wall-clock figures; ~2.7 h for the 24 runs on 2 cores; README has the measured table):
#   TS=../shared/data/tinystories
#   python prepare.py --source=$TS/train-v1-head.txt,$TS/train-v2-head.txt,$TS/train-subset-maxme1.txt \
#       --val_fraction=0.05 --tokenizer=bpe --vocab_size=4096 --out_dir=data/recipe
#   python sweep.py config/sweeps/recipe.py
#   python compare.py --runs=out-sweeps/recipe --reference=baseline
base = 'config/train_tinystories_cpu.py'
out_dir = 'out-sweeps/recipe'
# the budget ends every run; max_iters is out of reach, so the cosine decays over the 300 s whatever the speed
overrides = {'data_dir': 'data/recipe', 'time_budget': 300.0, 'max_iters': 1_000_000, 'lr_decay_iters': 0,
             'warmup_iters': 50, 'eval_interval': 25, 'eval_iters': 10, 'log_interval': 25}
# every run names its whole recipe, so none depends on what the demo config currently adopts
_adamw = {'optimizer': 'adamw', 'learning_rate': 2e-3, 'min_lr': 2e-4, 'qk_norm': False, 'act': 'swiglu',
          'tie_weights': True, 'embedding_lr': 0.0, 'head_lr': 0.0, 'normuon': False, 'lr_schedule': 'cosine',
          'mlp_hidden': 320, 'zero_init': False, 'logit_softcap': 0.0}
_muon = {'optimizer': 'muon', 'muon_lr': 0.04, 'learning_rate': 2e-3, 'min_lr': 2e-4}
runs = {
    'baseline': _adamw,
    'muon': {**_adamw, **_muon},
    'qk_norm': {**_adamw, 'qk_norm': True},
    'relu2': {**_adamw, 'act': 'relu2', 'mlp_hidden': 480},  # SwiGLU's parameters at width 320 (seed001_act.py)
    'zero_init': {**_adamw, 'zero_init': True},
    'logit_softcap': {**_adamw, 'logit_softcap': 15.0},
    'candidate': {**_adamw, **_muon, 'qk_norm': True, 'act': 'relu2', 'mlp_hidden': 480, 'zero_init': True,
                  'logit_softcap': 15.0},
    # what each component's run alone earned: Muon, QK-norm and squared ReLU, without zero-init and soft-capping
    'recipe': {**_adamw, **_muon, 'qk_norm': True, 'act': 'relu2', 'mlp_hidden': 480},
}
grid = {'seed': [1, 2, 3]}
