"""export.py: an exported model is the same model in transformers (logits within 1e-4, identical greedy tokens),
its tokenizer gives our ids, unrepresentable options and bad checkpoints get one-line errors, and an export
never destroys user files or leaves half a directory. Models are tiny and random, built in-process; the
weights are scaled up from their init so a wrong activation, epsilon or layout shows in the logits (init-scale
weights hide a tanh-approximated GELU below 1e-4)."""
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
    'gpt2-bias': ('gpt2', dict(GPT2_STYLE, bias=True)),
    'gpt2-nobias-untied': ('bpe', dict(GPT2_STYLE, bias=False, tie_weights=False)),
}


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
    """name -> (our model, its tokenizer, the directory export.export wrote and checked)."""
    pytest.importorskip('transformers')
    out = {}
    for name, (tok, kw) in MODELS.items():
        model, d = tiny(encs[tok], **kw), tmp_path_factory.mktemp('hf') / name
        assert export.export(model, encs[tok], str(d)) <= 1e-4  # the export's own check
        out[name] = model, encs[tok], d
    return out


@pytest.mark.parametrize('name', MODELS)
def test_exported_model_gives_our_logits_and_greedy_tokens(exports, name):
    from transformers import AutoModelForCausalLM
    model, enc, d = exports[name]
    hf = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    assert type(hf).__name__ == ('LlamaForCausalLM' if name.startswith('llama') else 'GPT2LMHeadModel')
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


@pytest.mark.parametrize('kw, named', [
    (dict(pos='sinusoidal'), "pos='sinusoidal'"), (dict(pos='none'), "pos='none'"),
    (dict(norm_pos='post'), "norm_pos='post'"), (dict(act='geglu'), "act='geglu'"),
    (dict(norm='layernorm'), "norm='layernorm'"), (dict(GPT2_STYLE, act='relu'), "act='relu'"),
    (dict(GPT2_STYLE, norm='none'), "norm='none'"), (dict(GPT2_STYLE, n_kv_head=2), 'n_kv_head=2')])
def test_unrepresentable_options_are_refused_in_one_line(kw, named):
    with pytest.raises(ValueError) as e:
        export.family(GPTConfig(n_head=4, n_embd=32, **kw))
    msg = str(e.value)
    assert named in msg and 'LlamaForCausalLM needs' in msg and 'GPT2LMHeadModel needs' in msg and '\n' not in msg


def test_training_only_options_do_not_block_an_export():
    assert export.family(GPTConfig(dropout=0.1, label_smoothing=0.1)) == 'llama'
    assert export.family(GPTConfig(n_kv_head=6, n_head=6, **GPT2_STYLE)) == 'gpt2'  # n_kv_head = n_head is plain


def run_export(monkeypatch, *args):
    """Run export.py in-process (its imports are already loaded) as a user would."""
    monkeypatch.setattr(sys, 'argv', ['export.py', *map(str, args)])
    monkeypatch.setattr(sys, 'excepthook', sys.excepthook)  # configure() installs its own; restore it after
    runpy.run_path(str(ROOT / 'export.py'), run_name='__main__')


def test_script_exports_a_trained_checkpoint_and_checks_it(monkeypatch, capsys, tiny_ckpt, tmp_path):
    pytest.importorskip('transformers')
    d = tmp_path / 'hf'
    for _ in range(2):  # the second run replaces its own earlier export without --overwrite
        run_export(monkeypatch, f'--out_dir={tiny_ckpt}', f'--export_dir={d}')
        line = capsys.readouterr().out.strip().splitlines()[-1]
        assert line.startswith('exported') and 'LlamaForCausalLM' in line and 'logit difference' in line, line
    assert sorted(os.listdir(d)) == sorted(export.EXPORT_FILES)
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
    assert (d / 'notes.txt').read_text() == 'keep me' and set(os.listdir(d)) == export.EXPORT_FILES | {'notes.txt'}
    (tmp_path / 'file').write_text('x')
    with pytest.raises(ValueError, match='is a file'):
        export.export(model, enc, str(tmp_path / 'file'), verify=False)


def test_a_failed_check_writes_nothing(encs, tmp_path, monkeypatch):
    pytest.importorskip('transformers')
    wrong = export.hf_config  # a config whose epsilon is not ours: the logits drift, the check must catch it
    monkeypatch.setattr(export, 'hf_config', lambda model, eot: wrong(model, eot) | {'rms_norm_eps': 1e-5})
    with pytest.raises(ValueError, match='logits differ from ours'):
        export.export(tiny(encs['bpe']), encs['bpe'], str(tmp_path / 'hf'))
    assert os.listdir(tmp_path) == []  # neither the export nor its temporary directory


def test_without_transformers_the_export_is_written_unchecked(encs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'transformers', None)  # import transformers now raises ImportError
    assert export.export(tiny(encs['bpe']), encs['bpe'], str(tmp_path / 'hf')) is None
    assert 'not installed' in capsys.readouterr().out and set(os.listdir(tmp_path / 'hf')) == export.EXPORT_FILES
