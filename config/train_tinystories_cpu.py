# The CPU demo (make demo): a small model trained on a laptop-class CPU until its stories read as simple English.
# README's measured table has its time, speed and losses.
# Data: the three local TinyStories train files (7,038 stories, 1.48M tokens), validated on validation-head.txt:
#   TS=../shared/data/tinystories
#   python prepare.py --source=$TS/train-v1-head.txt,$TS/train-v2-head.txt,$TS/train-subset-maxme1.txt \
#       --val_source=$TS/validation-head.txt --tokenizer=bpe --vocab_size=4096 --out_dir=data/tinystories-demo
#   python train.py config/train_tinystories_cpu.py
# Sizing: this 1.80M-parameter model costs 8.5 MFLOP per trained token (6N + attention; the embedding's lookup
# is free); 600 steps of 4,096 tokens are 2.5M tokens, ~1.7 passes over the 1.48M training tokens: with the recipe
# below (README, "The training recipe") ~7 minutes on 2 cores (README, "Measured").
# Its val loss sits above its train loss partly because the validation file's stories are split at paragraphs,
# each then starting after an <|endoftext|>. At this budget a wider or deeper model would get fewer steps; a
# 128-token context covers the few sentences a sample needs at a quarter of the attention cost of 512.
out_dir = 'out-tinystories-cpu'
data_dir = 'data/tinystories-demo'
device = 'cpu'
dtype = 'float32'  # bf16 autocast is slower than fp32 on most CPUs without AMX
compile = False    # compiling costs minutes on 2 cores, more than it saves in a run this short
eval_interval = 200
eval_iters = 10
log_interval = 20
wandb_run_name = 'cpu-demo'

n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
pos = 'rope'
norm = 'rmsnorm'
qk_norm = True     # the recipe: each component below earned its place (README, "The training recipe")
act = 'relu2'      # squared ReLU, at the parameter count of the SwiGLU it replaces (3 x 128 x 320 = 2 x 128 x 480)
mlp_hidden = 480
tie_weights = False  # an untied head (+0.5M parameters, no extra compute) at its own rate beats tying at this size
dropout = 0.0

batch_size = 32
gradient_accumulation_steps = 1  # 4,096 tokens per step
optimizer = 'muon'  # Muon for the blocks' matrices (its Newton-Schulz step in fp32 on a CPU), AdamW for the rest
muon_lr = 0.02
normuon = True        # each neuron's step evened out by its recent size
learning_rate = 8e-3  # AdamW's, for norms' gains: a 1M-parameter model trains stably at rates a 100M one would not
embedding_lr = 0.03   # the embedding's rows move only when their token occurs: a higher rate, no weight decay
head_lr = 8e-3
max_iters = 600
lr_decay_iters = 600
warmup_iters = 50
lr_schedule = 'wsd'   # the peak rate until the last half of the run, then a straight line down
cooldown_frac = 0.5
min_lr = 8e-4
weight_decay = 0.1
grad_clip = 1.0
