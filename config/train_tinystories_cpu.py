# The CPU demo (make demo): a small model trained on a laptop-class CPU until its stories read as simple English.
# README's measured table has its time, speed and losses.
# Data: the three local TinyStories train files (7,038 stories, 1.48M tokens), validated on validation-head.txt:
#   TS=../shared/data/tinystories
#   python prepare.py --source=$TS/train-v1-head.txt,$TS/train-v2-head.txt,$TS/train-subset-maxme1.txt \
#       --val_source=$TS/validation-head.txt --tokenizer=bpe --vocab_size=4096 --out_dir=data/tinystories-demo
#   python train.py config/train_tinystories_cpu.py
# Sizing: this 1.28M-parameter model costs 8.5 MFLOP per trained token (6N + attention); 900 steps of 4,096 tokens
# are 3.7M tokens, ~2.5 passes over the 1.48M training tokens: enough to learn sentences, too few to memorise.
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
act = 'swiglu'
tie_weights = True  # the 4096 x 128 embedding is 40% of the model: tying halves it
dropout = 0.0

batch_size = 32
gradient_accumulation_steps = 1  # 4,096 tokens per step
learning_rate = 2e-3  # a 1M-parameter model trains stably at rates a 100M one would not
max_iters = 900
lr_decay_iters = 900
warmup_iters = 50
min_lr = 2e-4
weight_decay = 0.1
grad_clip = 1.0
