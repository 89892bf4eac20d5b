"""
The model as equations: exactly the components a GPTConfig uses, with its sizes substituted, as LaTeX that both
MathJax (report.md) and matplotlib's mathtext (report.pdf) set. report.py's first section is this list.
"""


def equations(c):
    """The equations of exactly the components GPTConfig c uses, its sizes substituted: a list of (component,
    sentence, [LaTeX]). The LaTeX keeps to what both MathJax (report.md) and mathtext (report.pdf) render."""
    d, h, kv, dh, V, T, L, f = (c.n_embd, c.n_head, c.n_kv_head or c.n_head, c.head_dim, c.vocab_size, c.block_size,
                                c.n_layer, c.mlp_width)
    R = lambda a, b: rf'\in \mathbb{{R}}^{{{a} \times {b}}}'  # noqa: E731 (a matrix's shape)
    b = lambda s: f' + b_{{{s}}}' if c.bias else ''  # noqa: E731 (a bias vector, when the model has them)
    N = {'layernorm': r'\mathrm{LN}', 'rmsnorm': r'\mathrm{RMSNorm}'}.get(c.norm)
    x0 = {'learned': r'E_{w_t} + P_t', 'sinusoidal': rf'\sqrt{{{d}}}\,E_{{w_t}} + P_t'}.get(c.pos, r'E_{w_t}')
    out = [('embedding', f'Token embedding: the token w_t at position t = 0..{T - 1} selects row w_t of E.',
            [rf'x^{{(0)}}_t = {x0},\quad E {R(V, d)}'])]
    if c.pos == 'learned':
        out.append(('pos:learned', 'Learned positions (Radford et al. 2019): one trained row of P per position.',
                    [f'P {R(T, d)}']))
    elif c.pos == 'sinusoidal':
        out.append(('pos:sinusoidal', 'Sinusoidal positions (Vaswani et al. 2017), fixed:',
                    [rf'P_{{t,2i}} = \sin(t / 10000^{{2i/{d}}}),\quad P_{{t,2i+1}} = \cos(t / 10000^{{2i/{d}}})']))
    elif c.pos == 'rope':
        m = dh // 2
        out.append(('pos:rope', f'Rotary positions (RoPE, Su et al. 2021): in every head, query channels i and i + {m} '
                    "are rotated by an angle proportional to the position t, and so are the keys'; a score then "
                    'depends only on the distance between the two tokens:',
                    [rf'\tilde{{q}}_{{t,i}} = q_{{t,i}} \cos t\theta_i - q_{{t,i+{m}}} \sin t\theta_i,\quad '
                     rf'\tilde{{q}}_{{t,i+{m}}} = q_{{t,i}} \sin t\theta_i + q_{{t,i+{m}}} \cos t\theta_i',
                     rf'\theta_i = {c.rope_theta:g}^{{-2i/{dh}}},\quad i = 0, \dots, {m - 1}']))
    else:
        out.append(('pos:none', 'No position encoding (NoPE, Kazemnejad et al. 2023): order is known only through the '
                    'causal mask.', []))
    if c.zero_init:
        out.append(('zero_init', 'Zero-initialised output projections (as in modded-nanogpt): W^O and W_2 of every '
                    'block start at 0, so a fresh block adds nothing to the residual stream.', []))
    if c.dropout > 0:
        out.append(('dropout', f'Dropout with p = {c.dropout:g} on the embeddings, the attention weights and each '
                    'residual branch, in training only.', []))
    if N is None:
        blk = ('unnormalised', 'without normalisation', r"u = x + \mathrm{Attn}(x),\quad x' = u + \mathrm{MLP}(u)")
    elif c.norm_pos == 'pre':
        blk = ('pre', 'pre-norm (Radford et al. 2019): each sub-layer reads a normalised copy of the residual stream '
               'and adds its output to it',
               rf"u = x + \mathrm{{Attn}}({N}_1(x)),\quad x' = u + \mathrm{{MLP}}({N}_2(u))")
    else:
        blk = ('post', 'post-norm (Vaswani et al. 2017): each residual sum is normalised',
               rf"u = {N}_1(x + \mathrm{{Attn}}(x)),\quad x' = {N}_2(u + \mathrm{{MLP}}(u))")
    out.append((f'block:{blk[0]}', f"Each of the L = {L} blocks maps x = x^(l-1) to x' = x^(l), {blk[1]}:", [blk[2]]))
    if c.x0_mix:
        out.append(('x0_mix', 'x0 mixing (as in nanochat and modded-nanogpt): before block l the stream is mixed with '
                    'the embedding x^(0) by two trained scalars per block, starting at 1 and 0:',
                    [r'x^{(l-1)} \leftarrow \lambda_l\, x^{(l-1)} + \mu_l\, x^{(0)}']))
    avg = rf'\frac{{1}}{{{d}}}\sum_{{i=1}}^{{{d}}}'  # the mean over the d channels
    if c.norm == 'layernorm':
        out.append(('norm:layernorm', f'LayerNorm over the d = {d} channels, with a trained gain g'
                    + (' and bias b:' if c.bias else ':'),
                    [rf'\mathrm{{LN}}(x) = g \odot \frac{{x - \mu}}{{\sqrt{{\sigma^2 + 10^{{-5}}}}}}'
                     + (' + b' if c.bias else '') + rf',\quad \mu = {avg} x_i,\quad \sigma^2 = {avg} (x_i - \mu)^2']))
    elif c.norm == 'rmsnorm':
        out.append(('norm:rmsnorm', f'RMSNorm (Zhang & Sennrich 2019) over the d = {d} channels, with a gain g:',
                    [rf'\mathrm{{RMSNorm}}(x) = g \odot x \,/\, \sqrt{{{avg} x_i^2 + 10^{{-6}}}}']))
    q, k = (r'\tilde{Q}', r'\tilde{K}') if c.pos == 'rope' else ('Q', 'K')
    j = 'i' if kv == h else 'g(i)'
    if kv == h:
        qkv = (rf'Q_i = X W^Q_i{b("Q_i")},\quad K_i = X W^K_i{b("K_i")},\quad V_i = X W^V_i{b("V_i")},\quad '
               rf'W^Q_i, W^K_i, W^V_i {R(d, dh)},\quad i = 1, \dots, {h}')
    else:
        qkv = (rf'Q_i = X W^Q_i{b("Q_i")},\ i = 1, \dots, {h},\quad K_j = X W^K_j{b("K_j")},\ '
               rf'V_j = X W^V_j{b("V_j")},\ j = 1, \dots, {kv},\quad W^Q_i, W^K_j, W^V_j {R(d, dh)}')
    out.append(('attention', 'Causal multi-head self-attention: X holds the hidden states of a sequence, one row per '
                f'token; h = {h} heads of d_h = {dh} channels; the mask M hides the future:',
                [qkv, rf'\mathrm{{head}}_i = \mathrm{{softmax}}\left(\frac{{{q}_i {k}_{{{j}}}^\top}}{{\sqrt{{{dh}}}}} '
                 rf'+ M\right) V_{{{j}}},\quad M_{{ts}} = 0 \text{{ if }} s \leq t, \text{{ else }} -\infty',
                 rf'\mathrm{{Attn}}(X) = [\mathrm{{head}}_1, \dots, \mathrm{{head}}_{{{h}}}]\, W^O{b("O")},\quad '
                 rf'W^O {R(d, d)}']))
    if kv < h:
        out.append(('gqa', f'Grouped-query attention (Ainslie et al. 2023): the {h} query heads share {kv} key/value '
                    f'head{"s" if kv > 1 else ""}, {h // kv} query heads per group, so the key/value cache is '
                    f'{h // kv}x smaller:', [rf'g(i) = \lceil i \cdot {kv} / {h} \rceil']))
    if c.qk_norm:
        out.append(('qk_norm', 'QK-norm (Henry et al. 2020): each head\'s query and key vectors are RMS-normalised, '
                    f'with trained gains, before {"the rotation and " if c.pos == "rope" else ""}the scores, so no '
                    f'score exceeds sqrt({dh}) times the gains:',
                    [rf'q \leftarrow g^Q \odot q \,/\, '
                     rf'\sqrt{{\frac{{1}}{{{dh}}}\sum_{{i=1}}^{{{dh}}} q_i^2 + 10^{{-6}}}},'
                     r'\quad k \text{ likewise with } g^K']))
    name = {'gelu': 'GELU', 'geglu': 'GELU', 'relu': 'ReLU', 'relu2': 'ReLU2', 'silu': 'SiLU', 'swiglu': 'SiLU'}[c.act]
    phi, defn = {'GELU': (r'\mathrm{GELU}', r'\mathrm{GELU}(z) = z\,\Phi(z),\ \Phi \text{ the standard normal CDF}'),
                 'ReLU': (r'\mathrm{ReLU}', r'\mathrm{ReLU}(z) = \max(0, z)'),
                 'ReLU2': (r'\mathrm{ReLU}^2',
                           r'\mathrm{ReLU}^2(z) = \max(0, z)^2 \text{ (squared ReLU, So et al. 2021)}'),
                 'SiLU': (r'\mathrm{SiLU}', r'\mathrm{SiLU}(z) = z\,\sigma(z) = z / (1 + e^{-z})')}[name]
    gated = {'swiglu': 'SwiGLU', 'geglu': 'GeGLU'}.get(c.act)
    mlp = (rf'\left(x W_1{b("1")} \odot {phi}(x W_3{b("3")})\right) W_2{b("2")},\quad W_1, W_3 {R(d, f)}' if gated
           else rf'{phi}(x W_1{b("1")})\, W_2{b("2")},\quad W_1 {R(d, f)}')
    out.append((f'mlp:{c.act}', f'The MLP{f", gated ({gated}, Shazeer 2020)" if gated else ""}, {f} hidden channels:',
                [rf'\mathrm{{MLP}}(x) = {mlp},\ W_2 {R(f, d)}', defn]))
    final = N and c.norm_pos == 'pre'  # post-norm blocks already end normalised
    w_out = r'E^\top' if c.tie_weights else rf'W_{{out}},\quad W_{{out}} {R(d, V)}'
    out.append(('output', f'Output: {"a final norm, then " if final else ""}logits over the V = {V} tokens, and the '
                'next-token distribution:',
                [rf'z_t = {rf"{N}_f(x^{{({L})}}_t)" if final else rf"x^{{({L})}}_t"}\, {w_out}',
                 r'p_\theta(w_{t+1} = v \mid w_{\leq t}) = \mathrm{softmax}(z_t)_v']))
    if c.logit_softcap:
        out.append(('softcap', 'Logit soft-capping (Gemma Team 2024): the logits pass through a scaled tanh, smooth '
                    f'and kept inside (-{c.logit_softcap:g}, {c.logit_softcap:g}):',
                    [rf'z_t \leftarrow {c.logit_softcap:g} \tanh(z_t / {c.logit_softcap:g})']))
    if c.tie_weights:
        out.append(('tying', 'Weight tying (Press & Wolf 2017): the output matrix is the embedding E, transposed.', []))
    nll, e = r'\log p_\theta(w_{t+1} \mid w_{\leq t})', c.label_smoothing
    mean_t = rf'-\frac{{1}}{{{T}}}\sum_{{t=0}}^{{{T - 1}}}'  # the mean over a sequence's positions
    if e > 0:
        out.append(('loss:label_smoothing', 'Training loss: cross-entropy against the next token smoothed towards '
                    f'uniform by epsilon = {e:g} (Vaswani et al. 2017), averaged over the positions and the batch; '
                    'evaluation uses plain cross-entropy:',
                    [rf'\mathcal{{L}} = {mean_t} \left[{1 - e:g}\,{nll} + \frac{{{e:g}}}{{{V}}} \sum_{{v=1}}^{{{V}}} '
                     r'\log p_\theta(v \mid w_{\leq t})\right]']))
    else:
        out.append(('loss', 'Training loss: cross-entropy of the next token, averaged over positions and batch:',
                    [rf'\mathcal{{L}} = {mean_t} {nll}']))
    return out
