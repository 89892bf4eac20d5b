"""prepare.py: story splitting, the .bin/meta.json it writes, the datasets paths, re-runs, and bad input."""
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import prepare  # noqa: E402  (the script body is under __main__: importing it runs nothing)
import tokenizer  # noqa: E402

EOT = tokenizer.EOT


def decoded_stories(data_dir, split):
    """The stories in data_dir/split.bin, decoded: the file is <eot> story <eot> story ..."""
    meta = json.loads((Path(data_dir) / 'meta.json').read_text())
    ids = np.fromfile(Path(data_dir) / f'{split}.bin', dtype=meta['dtype'])
    enc = tokenizer.from_dir(data_dir)
    assert len(ids) and ids[0] == enc.eot_token
    return enc.decode(ids.tolist()).split(EOT)[1:]


def run_prepare(*args, **kw):
    return run_script('prepare.py', *args, **kw)


def test_bins_decode_to_exactly_the_input_stories(tiny_data):
    """train.bin holds the <|endoftext|>-separated stories of the .txt, val.bin the blank-line blocks of the
    delimiter-free validation file, each verbatim (stripped) and in order."""
    train_text = (tiny_data / 'train.txt').read_text()
    assert decoded_stories(tiny_data, 'train') == [s.strip() for s in train_text.split(EOT) if s.strip()]
    val_text = (tiny_data / 'val.txt').read_text()
    assert decoded_stories(tiny_data, 'val') == [b.strip() for b in re.split(r'\n[ \t]*\n', val_text) if b.strip()]


def test_meta_json_counts_match_the_files(tiny_data):
    """meta.json: token counts = .bin lengths, story counts = delimiters, bytes = UTF-8 bytes of the stories."""
    meta = json.loads((tiny_data / 'meta.json').read_text())
    assert (meta['version'], meta['tokenizer'], meta['tokenizer_file'], meta['dtype']) == (1, 'bpe', 'tokenizer.json', 'uint16')
    assert (meta['vocab_size'], meta['eot_id']) == (512, 511) and meta['args']['vocab_size'] == 512
    for split in ('train', 'val'):
        stories = decoded_stories(tiny_data, split)
        info = meta['splits'][split]
        assert info['tokens'] == os.path.getsize(tiny_data / f'{split}.bin') // 2
        assert info['stories'] == len(stories)
        assert info['bytes'] == sum(len(s.encode('utf-8')) for s in stories)


def test_txt_story_splitting(tmp_path):
    """.txt units: <|endoftext|> anywhere (own line or inline, blank lines around, CRLF) splits stories and
    paragraphs inside a story stay; without any delimiter, blank-line blocks are the units."""
    (tmp_path / 'a.txt').write_bytes(b'\r\nOne.\r\nTwo.\r\n<|endoftext|>\r\n\r\nThree.\r\n\r\nFour.\r\n<|endoftext|>Five.'
                                     b'<|endoftext|><|endoftext|>\n')
    assert list(prepare.txt_stories(str(tmp_path / 'a.txt'))) == ['One.\nTwo.', 'Three.\n\nFour.', 'Five.']
    (tmp_path / 'b.txt').write_text('\n\n Para one.\nline two\n \n\nPara two.')
    assert list(prepare.txt_stories(str(tmp_path / 'b.txt'))) == ['Para one.\nline two', 'Para two.']


def test_jsonl_and_parquet_through_datasets(tmp_path):
    """A directory of .jsonl + .parquet files (column --text_column) is read through `datasets`; with a
    seeded --val_fraction every row lands in exactly one split, each split in file order."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = [f'Story number {i}. Tom saw {"a dog" if i % 2 else "the sun"}, caf\u00e9 \U0001F600.' for i in range(60)]
    src = tmp_path / 'src'
    src.mkdir()
    with open(src / 'a.jsonl', 'w') as f:
        for r in rows[:30]:
            f.write(json.dumps({'story': r, 'id': 1}) + '\n')
    pq.write_table(pa.table({'story': rows[30:] + ['  '], 'n': list(range(31))}), src / 'b.parquet')
    out = tmp_path / 'out'
    run_prepare(f'--source={src}', '--text_column=story', '--val_fraction=0.2', '--vocab_size=300', f'--out_dir={out}')
    train, val = decoded_stories(out, 'train'), decoded_stories(out, 'val')
    assert sorted(train + val) == sorted(rows) and 0 < len(val) < 30
    assert train == [r for r in rows if r in set(train)] and val == [r for r in rows if r in set(val)]
    assert json.loads((out / 'meta.json').read_text())['splits']['val']['stories'] == len(val)


def test_table_errors_are_one_line(tmp_path):
    """A missing text column names the columns there are; a corrupt parquet file is a one-line exit."""
    (tmp_path / 'a.jsonl').write_text(json.dumps({'body': 'x'}) + '\n')
    with pytest.raises(SystemExit, match=r"no column 'text' \(columns: body\); pass --text_column"):
        list(prepare.table_stories(str(tmp_path / 'a.jsonl'), 'text'))
    (tmp_path / 'b.parquet').write_bytes(b'PAR1 this is not parquet')
    with pytest.raises(SystemExit, match=r"can't read .*b\.parquet"):
        list(prepare.table_stories(str(tmp_path / 'b.parquet'), 'text'))


def test_hub_is_streamed_with_config_and_split(monkeypatch):
    """Hub datasets are read with streaming=True (a subset never downloads the whole set), the given
    config and split, and the text column."""
    import datasets
    calls = []

    def fake_load(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        return iter([{'text': ' = Title = '}, {'text': ''}, {'text': 'Body.'}])
    monkeypatch.setattr(datasets, 'load_dataset', fake_load)
    monkeypatch.setattr(prepare, 'hf_config', 'wikitext-2-raw-v1')
    assert list(prepare.stories([('hub', 'wikitext')], 'validation')) == ['= Title =', 'Body.']
    assert calls == [('wikitext', 'wikitext-2-raw-v1', 'validation', True)]


def test_unreachable_hub_fails_fast_naming_local_files(tmp_path):
    """With the hub unreachable, the default source fails at once with one line pointing at the local copies."""
    p = run_prepare(f'--out_dir={tmp_path}', check=False, timeout=60,
                env={'HF_ENDPOINT': 'http://127.0.0.1:9', 'HF_HUB_OFFLINE': '0', 'HF_DATASETS_OFFLINE': '0',
                     'TINYSTORIES_SOURCE': 'roneneldan/TinyStories'})
    assert p.returncode != 0 and "can't reach the Hugging Face hub" in p.stderr
    assert '--source=../shared/data/tinystories/' in p.stderr and 'Traceback' not in p.stderr


def test_rerun_is_a_noop_unless_force_or_changed(shared_data, tmp_path):
    """Same settings and inputs: nothing is rewritten. --force rewrites byte-identical files (the whole
    pipeline is deterministic); a changed input file is prepared again."""
    src = tmp_path / 'train.txt'
    src.write_text((shared_data / 'tinystories' / 'train-v2-head.txt').read_text()[:120_000])
    out = tmp_path / 'out'
    args = (f'--source={src}', '--val_fraction=0.1', '--vocab_size=400', f'--out_dir={out}')
    run_prepare(*args)
    names = ('train.bin', 'val.bin', 'meta.json', 'tokenizer.json')
    before = {n: ((out / n).read_bytes(), (out / n).stat().st_mtime_ns) for n in names}
    assert 'nothing to do' in run_prepare(*args).stdout
    assert {n: ((out / n).read_bytes(), (out / n).stat().st_mtime_ns) for n in names} == before
    assert 'nothing to do' not in run_prepare(*args, '--force').stdout
    assert all((out / n).read_bytes() == before[n][0] for n in names if n != 'meta.json')
    assert all((out / n).stat().st_mtime_ns != before[n][1] for n in names)
    with open(src, 'a') as f:
        f.write('<|endoftext|>\nOne more story.\n')
    assert 'nothing to do' not in run_prepare(*args).stdout

    def n_stories(meta_text):
        return sum(s['stories'] for s in json.loads(meta_text)['splits'].values())
    assert n_stories((out / 'meta.json').read_text()) == n_stories(before['meta.json'][0]) + 1


def test_failed_run_keeps_the_previous_outputs(shared_data, tmp_path):
    """A run that fails after it started writing (here: the val source turns out empty) leaves the earlier,
    complete outputs untouched and no temporary files behind."""
    src, empty = tmp_path / 'train.txt', tmp_path / 'empty.txt'
    src.write_text((shared_data / 'tinystories' / 'train-v2-head.txt').read_text()[:60_000])
    empty.write_text('\n \n<|endoftext|>\n')
    out = tmp_path / 'out'
    run_prepare(f'--source={src}', '--val_fraction=0.1', '--vocab_size=300', f'--out_dir={out}')
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    p = run_prepare(f'--source={src}', f'--val_source={empty}', '--vocab_size=300', f'--out_dir={out}', check=False)
    assert p.returncode != 0 and 'no validation stories' in p.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_gpt2_tokenizer_and_max_stories_and_seeded_carve_out(shared_data, tmp_path):
    """--tokenizer=gpt2 writes GPT-2 ids (no tokenizer.json); --max_stories reads only the first N stories;
    the --val_fraction carve-out depends on the seed (the same seed gives the same split: see the --force test)."""
    src = shared_data / 'tinystories' / 'train-v2-head.txt'
    first = [s.strip() for s in src.read_text().split(EOT) if s.strip()][:40]
    runs = {}
    for name, seed in (('a', 1), ('c', 2)):
        run_prepare(f'--source={src}', '--tokenizer=gpt2', '--max_stories=40', '--val_fraction=0.3', f'--seed={seed}',
                f'--out_dir={tmp_path / name}')
        runs[name] = decoded_stories(tmp_path / name, 'val')
        assert sorted(decoded_stories(tmp_path / name, 'train') + runs[name]) == sorted(first)
    assert runs['a'] != runs['c']
    meta = json.loads((tmp_path / 'a' / 'meta.json').read_text())
    assert (meta['tokenizer'], meta['tokenizer_file'], meta['vocab_size'], meta['eot_id']) == ('gpt2', None, 50257, 50256)
    assert not (tmp_path / 'a' / 'tokenizer.json').exists()


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    """Invalid UTF-8 does not crash: each bad sequence becomes U+FFFD, and the count is reported and recorded."""
    (tmp_path / 'a.txt').write_bytes(b'Good story \xff one.\n<|endoftext|>\nBad \xc3( two.\n<|endoftext|>\nFine three.\n')
    (tmp_path / 'v.txt').write_text('A valid val story.')
    out = tmp_path / 'out'
    p = run_prepare(f'--source={tmp_path / "a.txt"}', f'--val_source={tmp_path / "v.txt"}', '--vocab_size=260', f'--out_dir={out}')
    assert '2 sequences' in p.stdout and 'invalid UTF-8' in p.stdout
    assert decoded_stories(out, 'train') == ['Good story \ufffd one.', 'Bad \ufffd( two.', 'Fine three.']
    assert json.loads((out / 'meta.json').read_text())['invalid_utf8'] == 2


def test_big_input_goes_through_the_worker_pool_in_order(shared_data, tmp_path):
    """An input of several batches is encoded by worker processes, and train.bin is still exactly
    <eot> + tokens of each story, in the source's order."""
    src = shared_data / 'tinystories' / 'train-subset-maxme1.txt'  # 2.4 MB: 3 batches of ~1 MB
    val = shared_data / 'tinystories' / 'format-sample-v2.txt'
    p = run_prepare(f'--source={src}', f'--val_source={val}', '--tokenizer=gpt2', '--num_proc=2', f'--out_dir={tmp_path}')
    assert 'encoding on 2 worker processes' in p.stderr + p.stdout
    enc = tokenizer.load_gpt2(str(shared_data / 'gpt2'))
    want = [t for s in src.read_text().split(EOT) if s.strip() for t in [enc.eot_token] + enc.encode_ordinary(s.strip())]
    assert np.array_equal(np.fromfile(tmp_path / 'train.bin', dtype=np.uint16), np.array(want, dtype=np.uint16))


@pytest.mark.parametrize('args, message', [
    (['--source=nowhere/stories.txt'], 'nowhere/stories.txt not found'),
    (['--source={tmp}/x.csv'], "unsupported file type '.csv'"),
    (['--source={tmp}/empty.txt'], 'no training stories'),
    (['--source={tmp}/*.jsonl'], 'no files match'),
    (['--source={tmp}/ok.txt', '--vocab_size=100'], 'vocab_size=100 is too small'),
    (['--source={tmp}/ok.txt', '--val_source={tmp}/ok.txt', '--val_fraction=0.1'], 'val_source and val_fraction both set'),
    (['--source={tmp}/ok.txt', '--tokenizer=sentencepiece'], "tokenizer must be 'bpe' or 'gpt2'"),
    (['--source={tmp}/ok.txt', '--val_fraction=1.5'], 'val_fraction must be in [0, 1)'),
    (['--source={tmp}/ok.txt', '--vocab_size=many'], "'vocab_size' must be int"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, args, message):
    """Each bad input exits non-zero with one line naming the problem, not a traceback, and writes nothing."""
    (tmp_path / 'x.csv').write_text('text\nhello\n')
    (tmp_path / 'empty.txt').write_text('\n\n  \n')
    (tmp_path / 'ok.txt').write_text('A story.\n\nAnother story.\n')
    p = run_prepare(*[a.format(tmp=tmp_path) for a in args], f'--out_dir={tmp_path / "out"}', check=False)
    # the last line: progress bars may come before it on stderr
    assert p.returncode != 0 and message in p.stderr.strip().splitlines()[-1] and 'Traceback' not in p.stderr
    assert not (tmp_path / 'out' / 'meta.json').exists()
