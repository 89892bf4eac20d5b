# The GPU default: a Llama-shaped model (RoPE, RMSNorm, QK-norm, squared ReLU, no biases, grouped-query attention)
# of ~27M parameters on all of TinyStories.
#   python prepare.py                       # roneneldan/TinyStories, our BPE with 4096 tokens -> data/tinystories
#   python train.py config/train_tinystories.py
#   torchrun --standalone --nproc_per_node=8 train.py config/train_tinystories.py   # same run on 1, 2, 4 or 8 GPUs
# Budget: 10k steps x 131k tokens = 1.3B tokens (~2.5 passes over the ~470M-token train split) at
# 0.175 GFLOP/token, 2.3e17 FLOPs: ~15 minutes on one H100 at 25-30% MFU (an estimate, not measured here).
out_dir = 'out-tinystories'
data_dir = 'data/tinystories'
eval_interval = 500
eval_iters = 100
log_interval = 50
wandb_run_name = 'llama-25m'

# 8 layers x 512, 8 query heads of 64 sharing 4 key/value heads; an untied 4096 x 512 embedding and head (4.2M of
# the ~27M parameters). The CPU demo's recipe (README, "The training recipe"), measured at the demo's scale and not
# yet on a GPU: Muon (with NorMuon) for the blocks' matrices, QK-norm, squared ReLU at the width that keeps the
# parameters of the SwiGLU it replaces (2 x 512 x 2016 = 3 x 512 x 1344), the embedding and the head at AdamW rates
# of their own, and a warmup-stable-decay schedule. Unmeasured here: the AdamW-side rates, the CPU's divided by 2
# for a model 4x as wide (nanochat scales them as 1/sqrt(width)), and whether the GPU's 1.3B tokens move the best
# Muon rate.
n_layer = 8
n_head = 8
n_kv_head = 4
n_embd = 512
block_size = 512  # a story is ~200 tokens at this vocabulary: 512 spans two or three with their boundaries
pos = 'rope'
norm = 'rmsnorm'
norm_pos = 'pre'
qk_norm = True
act = 'relu2'
mlp_hidden = 2016
bias = False
tie_weights = False
dropout = 0.0  # 2.5 passes over 470M tokens: too little repetition to overfit

batch_size = 32
gradient_accumulation_steps = 8  # global: 32 x 8 x 512 = 131,072 tokens per step, split over 1-8 GPUs
optimizer = 'muon'
muon_lr = 0.02
normuon = True
learning_rate = 4e-3  # AdamW's, for the norms' gains
embedding_lr = 0.015
head_lr = 4e-3
max_iters = 10000
lr_decay_iters = 10000
warmup_iters = 300
lr_schedule = 'wsd'
cooldown_frac = 0.5
min_lr = 4e-4
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

dtype = 'bfloat16'
compile = True
