"""export.py: an exported model is the same model in transformers (logits within 1e-4, identical greedy tokens),
and its GGUF file too, in transformers' GGUF reader and (when llama-cpp-python is installed) in llama.cpp; its
tokenizer gives our ids, unrepresentable options and bad checkpoints get one-line errors, and an export never
destroys user files, leaves half a directory or mixes two exports. Models are tiny and random, built
in-process; every weight, norm gains included, is moved from its init so a wrong activation, epsilon, layout
or QK-norm shows in the logits (init-scale weights hide a tanh-approximated GELU below 1e-4)."""
import os
import runpy
import sys

import pytest
import torch

from conftest import ROOT, run_script

sys.path.insert(0, str(ROOT))
import export  # noqa: E402
from configurator import describe  # noqa: E402
from decode import generate  # noqa: E402
import tokenizer  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

GPT2_STYLE = dict(pos='learned', norm='layernorm', act='gelu')
MODELS = {  # name: (tokenizer, GPTConfig overrides); vocab 300 and 50257 both leave padding rows to drop
    'llama-gqa-tied': ('bpe', dict(n_kv_head=2)),
    'llama-mqa-untied-bias': ('bpe', dict(n_kv_head=1, tie_weights=False, bias=True)),
    'qwen3-gqa-untied': ('bpe', dict(qk_norm=True, n_kv_head=2, tie_weights=False)),
    'arcee-tied': ('bpe', dict(act='relu2')),
    'apertus-tied': ('bpe', dict(qk_norm=True, act='relu2')),  # llama.cpp's apertus needs its output.weight written
    'apertus-gqa-untied': ('bpe', dict(qk_norm=True, act='relu2', n_kv_head=2, tie_weights=False)),  # the defaults'
    'gpt2-bias': ('gpt2', dict(GPT2_STYLE, bias=True)),
    'gpt2-nobias-untied': ('bpe', dict(GPT2_STYLE, bias=False, tie_weights=False)),
}
CLASS = {'llama': 'LlamaForCausalLM', 'qwen3': 'Qwen3ForCausalLM', 'arcee': 'ArceeForCausalLM',
         'apertus': 'ApertusForCausalLM', 'gpt2': 'GPT2LMHeadModel'}  # by the name's first word
NO_GGUF = {f for f in export.EXPORT_FILES if not f.endswith('.gguf')}  # the files of an export without --gguf


@pytest.fixture(scope='module')
def encs(shared_data):
    text = (shared_data / 'tinystories' / 'train-v1-head.txt').read_text()[:100_000]
    bpe_json = tokenizer.bpe_json(tokenizer.train_bpe([text], 300, progress=False))
    return {'bpe': tokenizer.bpe_from_json(bpe_json), 'bpe_json': bpe_json,
            'gpt2': tokenizer.load_gpt2(str(shared_data / 'gpt2'))}


def tiny(enc, seed=0, **kw):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=enc.n_vocab, block_size=64, n_layer=2, n_head=4, n_embd=32, **kw)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.fixture(scope='module')
def exports(encs, tmp_path_factory):
    """name -> (our model, its tokenizer, the directory export.export wrote and checked, with model-f32.gguf)."""
    pytest.importorskip('transformers')
    out = {}
    for name, (tok, kw) in MODELS.items():
        model, d = tiny(encs[tok], **kw), tmp_path_factory.mktemp('hf') / name
        assert export.export(model, encs[tok], str(d), gguf='f32') <= 1e-4  # the export's own check
        out[name] = model, encs[tok], d
    return out


@pytest.mark.parametrize('name', MODELS)
def test_exported_model_gives_our_logits_and_greedy_tokens(exports, name):
    from transformers import AutoModelForCausalLM
    model, enc, d = exports[name]
    hf = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    assert type(hf).__name__ == CLASS[name.split('-')[0]]
    eot, V = enc.eot_token, model.config.vocab_size
    x = torch.tensor([([eot] + enc.encode('Once upon a time, a little dog named Max found a big red ball.'))[:64]])
    with torch.no_grad():
        ours, theirs = model(x, targets=x)[0], hf(input_ids=x).logits
    assert theirs.shape == (1, x.size(1), V)  # exactly vocab_size: the padded ids are absent
    assert (ours - theirs).abs().max() <= 1e-4
    ours = torch.cat([x[:, :8], torch.stack(list(generate(model, x[:, :8], 20, temperature=0, eos_id=eot)), 1)], 1)
    theirs = hf.generate(x[:, :8], attention_mask=torch.ones_like(x[:, :8]), max_new_tokens=20, do_sample=False)
    assert theirs.tolist() == ours.tolist() and ours.size(1) == 8 + 20  # no early <|endoftext|>: all 20 compared


@pytest.mark.parametrize('name', ['llama-gqa-tied', 'gpt2-bias'])  # our BPE, GPT-2's BPE
def test_exported_tokenizer_ids_equal_ours_on_validation_text(exports, shared_data, name):
    from transformers import AutoTokenizer
    _, enc, d = exports[name]
    hf = AutoTokenizer.from_pretrained(d)
    val = (shared_data / 'tinystories' / 'validation-head.txt').read_text()
    odd = 'x<|endoftext|>  two  spaces\n\n\n\t12345 3.14 café 日本語 🙂🐶 don\'t    \n \n'
    for text in (val, val[:5000] + '<|endoftext|>' + val[5000:10000], odd):
        ids = enc.encode(text, allowed_special='all')
        assert hf(text, verbose=False)['input_ids'] == ids
        assert hf.decode(ids) == text
    assert (hf.bos_token_id, hf.eos_token_id) == (enc.eot_token, enc.eot_token)


# transformers' GGUF reader knows llama and qwen3 (not arcee, apertus, or gpt2 with our exact GELU). It reads no
# head_dim for qwen3 (it assumes 128) and no bias flags for llama, so those are passed as a user would.
@pytest.mark.parametrize('name, kw', [('llama-gqa-tied', {}), ('qwen3-gqa-untied', dict(head_dim=8)),
                                      ('llama-mqa-untied-bias', dict(attention_bias=True, mlp_bias=True))])
def test_gguf_in_transformers_gives_our_logits_and_tokenizer_ids(exports, shared_data, name, kw):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model, enc, d = exports[name]
    hf = AutoModelForCausalLM.from_pretrained(d, gguf_file='model-f32.gguf', dtype=torch.float32, **kw)
    x = torch.randint(0, model.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(x, targets=x)[0] - hf(input_ids=x).logits).abs().max() <= 1e-4  # q/k rows un-permuted
    text = (shared_data / 'tinystories' / 'validation-head.txt').read_text()[:20_000] + '<|endoftext|> café 🙂\n\n'
    ids = enc.encode(text, allowed_special='all')
    assert AutoTokenizer.from_pretrained(d, gguf_file='model-f32.gguf')(text)['input_ids'] == ids


def test_f16_and_q8_0_gguf_hold_our_weights_within_their_rounding(exports, tmp_path):
    import numpy as np
    from gguf import GGUFReader, quants
    model, enc, _ = exports['apertus-tied']

    def read(t):  # an export with a GGUF of type t replaces the one of another type
        export.export(model, enc, str(tmp_path), verify=False, gguf=t)
        assert [p for p in os.listdir(tmp_path) if p.endswith('.gguf')] == [f'model-{t}.gguf']
        return {r.name: (r.tensor_type.name, quants.dequantize(r.data, r.tensor_type))
                for r in GGUFReader(tmp_path / f'model-{t}.gguf').tensors}
    exact, f16, q8 = read('f32'), read('f16'), read('q8_0')
    assert set(exact) == set(f16) == set(q8) and 'output.weight' in exact  # llama.cpp's apertus wants output
    for name, (_, w) in exact.items():
        if w.ndim == 1:  # norms stay f32
            assert f16[name][0] == q8[name][0] == 'F32' and (f16[name][1] == w).all() and (q8[name][1] == w).all()
            continue
        assert f16[name][0] == 'F16' and (f16[name][1] == w.astype(np.float16)).all()
        # Q8_0: blocks of 32 values, each a multiple of its block's step max|x| / 127 (stored as f16): within
        # half a step, plus 127 times the step's f16 rounding (2^-11 of it)
        blocks, step = w.reshape(-1, 32), np.abs(w.reshape(-1, 32)).max(1, keepdims=True) / 127
        assert q8[name][0] == 'Q8_0' and (np.abs(q8[name][1].reshape(-1, 32) - blocks) <= step * 0.57).all()


# llama.cpp's gpt2 has the tanh-approximated GELU, not ours: its logits are only close (~2e-3), its greedy tokens ours.
@pytest.mark.parametrize('name', ['llama-gqa-tied', 'llama-mqa-untied-bias', 'qwen3-gqa-untied', 'arcee-tied',
                                  'apertus-tied', 'apertus-gqa-untied', 'gpt2-bias'])
def test_llama_cpp_gives_our_logits_and_greedy_tokens(exports, name):
    pytest.importorskip('llama_cpp')  # `make gguf-check` installs it; compiling it is too slow for `make test`
    model, enc, d = exports[name]
    same, diff, _, _ = export.check_llama_cpp(model, enc, str(d / 'model-f32.gguf'), n=20, threads=1)
    assert same == 20 and diff <= (1e-2 if name.startswith('gpt2') else 1e-4)


@pytest.mark.parametrize('name', ['llama-gqa-tied', 'gpt2-bias'])  # our BPE, GPT-2's BPE
def test_llama_cpp_tokenizes_validation_text_as_we_do(exports, shared_data, name):
    llama_cpp = pytest.importorskip('llama_cpp')
    _, enc, d = exports[name]
    llm = llama_cpp.Llama(str(d / 'model-f32.gguf'), vocab_only=True, verbose=False)
    text = (shared_data / 'tinystories' / 'validation-head.txt').read_text()[:50_000] + '<|endoftext|> café 🙂\n\n'
    ids = enc.encode(text, allowed_special='all')
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
    assert llm.detokenize(ids, special=True).decode() == text
    llm.close()


@pytest.mark.parametrize('kw, named', [
    (dict(pos='sinusoidal'), "pos='sinusoidal'"), (dict(pos='none'), "pos='none'"),
    (dict(norm_pos='post'), "norm_pos='post'"), (dict(act='geglu'), "act='geglu'"),
    (dict(norm='layernorm'), "norm='layernorm'"), (dict(GPT2_STYLE, act='relu'), "act='relu'"),
    (dict(GPT2_STYLE, norm='none'), "norm='none'"), (dict(GPT2_STYLE, n_kv_head=2), 'n_kv_head=2'),
    (dict(act='relu2', qk_norm=True, bias=True), 'bias=True, qk_norm=True')])
def test_unrepresentable_options_are_refused_in_one_line(kw, named):
    with pytest.raises(ValueError) as e:
        export.hf_class(GPTConfig(n_head=4, n_embd=32, **kw))
    msg = str(e.value)
    assert named in msg and '\n' not in msg and all(f'{cls} needs' in msg for cls in CLASS.values())


def test_gguf_refusals_are_one_line_and_write_nothing(encs, tmp_path):
    for kw, gguf, named in ((dict(act='relu2', bias=True), 'f32', 'bias=True'), ({}, 'q4', "--gguf='q4'")):
        with pytest.raises(ValueError) as e:
            export.export(tiny(encs['bpe'], **kw), encs['bpe'], str(tmp_path / 'hf'), gguf=gguf)
        assert named in str(e.value) and '\n' not in str(e.value)
    assert os.listdir(tmp_path) == []  # refused before anything is written


def test_training_only_options_do_not_block_an_export():
    assert export.hf_class(GPTConfig(dropout=0.1, label_smoothing=0.1, zero_init=True)) == 'LlamaForCausalLM'
    assert export.hf_class(GPTConfig(n_kv_head=6, n_head=6, **GPT2_STYLE)) == 'GPT2LMHeadModel'  # n_kv_head = n_head


def run_export(monkeypatch, *args):
    """Run export.py in-process (its imports are already loaded) as a user would."""
    monkeypatch.setattr(sys, 'argv', ['export.py', *map(str, args)])
    monkeypatch.setattr(sys, 'excepthook', sys.excepthook)  # configure() installs its own; restore it after
    runpy.run_path(str(ROOT / 'export.py'), run_name='__main__')


def test_script_exports_a_trained_checkpoint_and_checks_it(monkeypatch, capsys, tiny_ckpt, tmp_path):
    pytest.importorskip('transformers')
    d = tmp_path / 'hf'
    for gguf in ('', 'f16'):  # the second run replaces its own earlier export without --overwrite
        run_export(monkeypatch, f'--out_dir={tiny_ckpt}', f'--export_dir={d}', f'--gguf={gguf}')
        line = capsys.readouterr().out.strip().splitlines()[-1]
        assert line.startswith('exported') and 'LlamaForCausalLM' in line and 'logit difference' in line, line
    assert 'model-f16.gguf for llama.cpp\'s llama' in line
    assert set(os.listdir(d)) == NO_GGUF | {'model-f16.gguf'}  # with rundir's .lock
    assert not [p for p in os.listdir(tmp_path) if p != 'hf']  # no temporary directory left behind


def test_missing_or_damaged_checkpoint_is_a_one_line_error(monkeypatch, tmp_path):
    (tmp_path / 'best.pt').write_bytes(b'not a checkpoint')
    for ckpt, says in (('last', 'no checkpoint at'), ('best', 'cannot be read')):
        with pytest.raises((SystemExit, OSError, ValueError)) as e:  # configure()'s hook makes each one line
            run_export(monkeypatch, f'--out_dir={tmp_path}', f'--ckpt={ckpt}', f'--export_dir={tmp_path / "hf"}')
        msg = e.value.code if isinstance(e.value, SystemExit) else describe(e.value)
        assert isinstance(msg, str) and says in msg and '\n' not in msg, msg
    assert not (tmp_path / 'hf').exists()


def test_script_refuses_an_unexportable_checkpoint_with_one_stderr_line(encs, tmp_path):
    enc, text = encs['bpe'], encs['bpe_json']
    model = tiny(enc, pos='sinusoidal')
    state = {'name': 'bpe', 'n_vocab': enc.n_vocab, 'eot_id': enc.eot_token, 'json': text}  # as train.py stores it
    torch.save({'model': model.state_dict(), 'model_args': model.config.to_dict(), 'tokenizer': state},
               tmp_path / 'best.pt')
    p = run_script('export.py', f'--out_dir={tmp_path}', check=False)
    assert p.returncode == 1 and 'Traceback' not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "pos='sinusoidal'" in p.stderr, p.stderr
    assert not (tmp_path / 'hf').exists()


def test_a_non_empty_directory_is_refused_unless_overwrite_and_its_files_survive(encs, tmp_path):
    model, enc, d = tiny(encs['bpe']), encs['bpe'], tmp_path / 'mine'
    d.mkdir()
    (d / 'notes.txt').write_text('keep me')
    (d / 'config.json').write_text('{"not": "an export"}')
    with pytest.raises(ValueError, match='not empty and not an earlier export'):
        export.export(model, enc, str(d), verify=False)
    assert sorted(os.listdir(d)) == ['config.json', 'notes.txt']
    export.export(model, enc, str(d), overwrite=True, verify=False)
    assert (d / 'notes.txt').read_text() == 'keep me' and set(os.listdir(d)) == NO_GGUF | {'notes.txt'}
    (tmp_path / 'file').write_text('x')
    with pytest.raises(ValueError, match='is a file'):
        export.export(model, enc, str(tmp_path / 'file'), verify=False)


# A config.json that is not ours (an epsilon; Apertus's default llama3-scaled rotary): the logits drift, the
# check must catch it before anything is written.
@pytest.mark.parametrize('wrong', [{'rms_norm_eps': 1e-5}, {'rope_scaling': None}])
def test_a_failed_check_writes_nothing(encs, tmp_path, monkeypatch, wrong):
    pytest.importorskip('transformers')
    right = export.llama_style
    monkeypatch.setattr(export, 'llama_style', lambda *a: (lambda cfg, sd: (cfg | wrong, sd))(*right(*a)))
    with pytest.raises(ValueError, match='logits differ from ours'):
        export.export(tiny(encs['bpe'], qk_norm=True, act='relu2'), encs['bpe'], str(tmp_path / 'hf'), gguf='f32')
    assert os.listdir(tmp_path) == []  # neither the export nor its temporary directory


def test_an_export_into_a_directory_another_export_holds_is_refused_and_leaves_it_alone(exports, tmp_path):
    import rundir
    model, enc, d = exports['llama-gqa-tied']
    files = lambda: {p: (d / p).read_bytes() for p in os.listdir(d) if p != '.lock'}
    before = files()
    held = rundir.lock(str(d))  # as the other export holds it while it moves its files in
    try:
        with pytest.raises(BlockingIOError, match='in use by'):
            export.export(tiny(enc, seed=1, n_kv_head=2), enc, str(d), verify=False, gguf='f32')
    finally:
        held.close()
    assert files() == before
    assert not [p for p in os.listdir(d.parent) if p != d.name]  # no temporary directory left behind


def test_without_transformers_the_export_is_written_unchecked(encs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'transformers', None)  # import transformers now raises ImportError
    assert export.export(tiny(encs['bpe']), encs['bpe'], str(tmp_path / 'hf')) is None
    assert 'not installed' in capsys.readouterr().out and set(os.listdir(tmp_path / 'hf')) == NO_GGUF
