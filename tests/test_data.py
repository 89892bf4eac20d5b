"""data.py: meta.json and the token files are checked once, here, for every script that reads them; batches are
windows of the stream with their next tokens as targets."""
import json
import shutil

import numpy as np
import pytest
import torch

import data


def test_read_meta_names_a_missing_or_damaged_field(tmp_path):
    """read_meta returns a good meta.json; a missing one is a FileNotFoundError, a damaged one (not JSON, or a field
    any reader relies on gone or wrong) a ValueError naming the field; both one line that says to re-run prepare.py."""
    with pytest.raises(FileNotFoundError, match=f'^no prepared data in {tmp_path} .*run python prepare.py --out_dir='):
        data.read_meta(tmp_path)
    good = {'tokenizer': 'bpe', 'vocab_size': 300, 'eot_id': 299, 'dtype': 'uint16',
            'splits': {'train': {'tokens': 10}, 'val': {'tokens': 0}}}
    (tmp_path / 'meta.json').write_text(json.dumps(good))
    assert data.read_meta(tmp_path) == good
    for damage, named in (('{"tokenizer": "bpe", ', 'not JSON'), ('[1, 2]', 'not a JSON object'),
                          ({'tokenizer': 'spm'}, "tokenizer 'spm'"), ({'dtype': 'int8'}, "dtype 'int8'"),
                          ({'eot_id': 300}, 'eot_id=300'), ({'vocab_size': '300'}, "vocab_size='300'"),
                          ({'splits': {'train': {'tokens': 10}}}, 'splits')):
        (tmp_path / 'meta.json').write_text(damage if isinstance(damage, str) else json.dumps({**good, **damage}))
        with pytest.raises(ValueError) as e:
            data.read_meta(tmp_path)
        assert named in str(e.value) and 'is damaged' in str(e.value) and '--force' in str(e.value)
        assert '\n' not in str(e.value)


def test_open_split_refuses_files_that_do_not_match_meta_json(tiny_data, tmp_path):
    """A good split opens as its tokens; a missing .bin, one of another length, ids at or past vocab_size, or a
    block_size the split cannot fill are each one line naming the file or the setting and the fix."""
    tokens = data.open_split(tiny_data, 'val')
    assert len(tokens) == data.read_meta(tiny_data)['splits']['val']['tokens'] and tokens.max() < 512
    d = tmp_path / 'd'
    shutil.copytree(tiny_data, d)
    cases = [(lambda: (d / 'val.bin').unlink(), FileNotFoundError, 'val.bin is missing'),
             (lambda: (d / 'val.bin').write_bytes(b'\0' * 7), ValueError, 'not the'),
             (lambda: None, ValueError, 'past vocab_size=100')]
    for damage, error, words in cases:
        shutil.copy(tiny_data / 'val.bin', d / 'val.bin')
        damage()
        with pytest.raises(error) as e:
            data.open_split(d, 'val', vocab_size=100 if 'vocab' in words else None)
        assert words in str(e.value) and 'prepare.py' in str(e.value) and '\n' not in str(e.value)
    with pytest.raises(ValueError, match='too few for block_size'):
        data.open_split(tiny_data, 'val', block_size=len(tokens))
    with pytest.raises(ValueError, match="no split 'test'"):
        data.open_split(tiny_data, 'test')


def test_a_batch_is_windows_of_the_stream_and_their_next_tokens():
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = data.get_batch(tokens, torch.tensor([0, 17, 990]), 9, 'cpu')
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (3, 9)
    assert x[1].tolist() == list(range(17, 26)) and torch.equal(y[:, :-1], x[:, 1:]) and y[2, -1] == 999
