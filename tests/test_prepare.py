"""prepare.py: story splitting, the .bin/meta.json it writes, the datasets paths, re-runs, bad input, and an out_dir
that is busy, full, read-only or holds someone else's files. Most runs call prepare.main in this process; a few
start `python prepare.py` to check what a user sees at the command line."""
import errno
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import configurator  # noqa: E402
import data  # noqa: E402
import prepare  # noqa: E402  (the script part is main(): importing it runs nothing)
import rundir  # noqa: E402
import tokenizer  # noqa: E402

EOT = tokenizer.EOT


def decoded_stories(data_dir, split):
    """The stories in data_dir/split.bin, decoded: the file is <eot> story <eot> story ..."""
    meta = data.read_meta(data_dir)
    ids = np.fromfile(Path(data_dir) / f'{split}.bin', dtype=meta['dtype'])
    enc = tokenizer.from_dir(data_dir)
    assert len(ids) and ids[0] == enc.eot_token
    return enc.decode(ids.tolist()).split(EOT)[1:]


def run_prepare(*args, **kw):
    return run_script('prepare.py', *args, **kw)


def prepare_main(*args):
    """prepare.py with these arguments, in this process."""
    prepare.main([str(a) for a in args])


def one_line(e):
    """What the command line prints for the exception e (configure()'s hook): one line, never a traceback."""
    line = configurator.describe(e)
    assert line is not None and '\n' not in line, f'{type(e).__name__}: {e} would print a traceback'
    return line


def snapshot(d):
    """name -> bytes of every file in d but the lock file: what a failed run must leave exactly as it was
    (a temporary file left behind shows up as a new name)."""
    return {p.name: p.read_bytes() for p in Path(d).iterdir() if p.name != rundir.LOCK}


def story_file(path, shared_data, chars):
    """The first ~chars characters of real TinyStories train text, cut at a story boundary."""
    text = (shared_data / 'tinystories' / 'train-v2-head.txt').read_text()
    path.write_text(text[:text.index(EOT, chars) + len(EOT)])
    return path


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
    assert (meta['invalid_utf8'], meta['not_text_rows']) == (0, 0)
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
    prepare_main(f'--source={src}', '--text_column=story', '--val_fraction=0.2', '--vocab_size=300', f'--out_dir={out}')
    train, val = decoded_stories(out, 'train'), decoded_stories(out, 'val')
    assert sorted(train + val) == sorted(rows) and 0 < len(val) < 30
    assert train == [r for r in rows if r in set(train)] and val == [r for r in rows if r in set(val)]
    assert json.loads((out / 'meta.json').read_text())['splits']['val']['stories'] == len(val)


def test_rows_whose_text_is_not_a_string_are_counted_and_reported(tmp_path, capsys):
    """Rows whose text is None, a number, a list or a dict are skipped, but counted: one warning line gives the
    count and the files they were in, and meta.json records it. The string rows are all kept, in order."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    (tmp_path / 'a.jsonl').write_text(''.join(json.dumps({'text': t}) + '\n' for t in
                                              ['First story.', None, 7, ['a', 'list'], 'Second story.', {'x': 1}, 2.5]))
    pq.write_table(pa.table({'text': ['Third story.', None, '  ']}), tmp_path / 'b.parquet')
    (tmp_path / 'v.txt').write_text('A val story.')
    out = tmp_path / 'out'
    prepare_main(f'--source={tmp_path}/a.jsonl,{tmp_path}/b.parquet', f'--val_source={tmp_path}/v.txt',
                 '--vocab_size=260', f'--out_dir={out}')
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith('warning')]
    assert warnings == [f"warning: skipped 6 rows whose 'text' is not a string (5 in {tmp_path}/a.jsonl, "
                        f"1 in {tmp_path}/b.parquet)"]
    assert decoded_stories(out, 'train') == ['First story.', 'Second story.', 'Third story.']
    assert data.read_meta(out)['not_text_rows'] == 6


def test_table_errors_are_one_line(tmp_path):
    """A missing text column names the columns there are; a corrupt parquet file is a one-line ValueError."""
    (tmp_path / 'a.jsonl').write_text(json.dumps({'body': 'x'}) + '\n')
    with pytest.raises(ValueError, match=r"no column 'text' \(columns: body\); pass --text_column") as e:
        list(prepare.stories([('file', str(tmp_path / 'a.jsonl'))], 'train', 'text'))
    one_line(e.value)
    (tmp_path / 'b.parquet').write_bytes(b'PAR1 this is not parquet')
    with pytest.raises(ValueError, match=r"can't read .*b\.parquet") as e:
        list(prepare.stories([('file', str(tmp_path / 'b.parquet'))], 'train', 'text'))
    one_line(e.value)


def test_hub_is_streamed_with_config_and_split(monkeypatch):
    """Hub datasets are read with streaming=True (a subset never downloads the whole set), the given
    config and split, and the text column."""
    import datasets
    calls = []

    def fake_load(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        return iter([{'text': ' = Title = '}, {'text': ''}, {'text': 'Body.'}])
    monkeypatch.setattr(datasets, 'load_dataset', fake_load)
    assert list(prepare.stories([('hub', 'wikitext')], 'validation', 'text', 'wikitext-2-raw-v1')) == ['= Title =', 'Body.']
    assert calls == [('wikitext', 'wikitext-2-raw-v1', 'validation', True)]


def test_unreachable_hub_fails_fast_naming_local_files(tmp_path):
    """With the hub unreachable, the default source fails at once with one line pointing at the local copies,
    and leaves no out_dir behind."""
    p = run_prepare(f'--out_dir={tmp_path / "out"}', check=False, timeout=60,
                    env={'HF_ENDPOINT': 'http://127.0.0.1:9', 'HF_HUB_OFFLINE': '0', 'HF_DATASETS_OFFLINE': '0',
                         'TINYSTORIES_SOURCE': 'roneneldan/TinyStories'})
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and "can't reach the Hugging Face hub" in p.stderr
    assert '--source=../shared/data/tinystories/' in p.stderr and 'Traceback' not in p.stderr
    assert not (tmp_path / 'out').exists()


def test_rerun_is_a_noop_unless_force_or_changed(shared_data, tmp_path, capsys):
    """Same settings and inputs: nothing is rewritten. --force rewrites byte-identical files (the whole
    pipeline is deterministic); a changed input file is prepared again."""
    src = story_file(tmp_path / 'train.txt', shared_data, 120_000)
    out = tmp_path / 'out'
    args = (f'--source={src}', '--val_fraction=0.1', '--vocab_size=400', f'--out_dir={out}')
    prepare_main(*args)
    names = ('train.bin', 'val.bin', 'meta.json', 'tokenizer.json')
    before = {n: ((out / n).read_bytes(), (out / n).stat().st_mtime_ns) for n in names}
    capsys.readouterr()
    prepare_main(*args)
    assert 'nothing to do' in capsys.readouterr().out
    assert {n: ((out / n).read_bytes(), (out / n).stat().st_mtime_ns) for n in names} == before
    prepare_main(*args, '--force')
    assert 'nothing to do' not in capsys.readouterr().out
    assert all((out / n).read_bytes() == before[n][0] for n in names if n != 'meta.json')
    assert all((out / n).stat().st_mtime_ns != before[n][1] for n in names)
    with open(src, 'a') as f:
        f.write('<|endoftext|>\nOne more story.\n')
    prepare_main(*args)
    assert 'nothing to do' not in capsys.readouterr().out

    def n_stories(meta_text):
        return sum(s['stories'] for s in json.loads(meta_text)['splits'].values())
    assert n_stories((out / 'meta.json').read_text()) == n_stories(before['meta.json'][0]) + 1


def test_failed_run_keeps_the_previous_outputs(shared_data, tmp_path):
    """A run that fails after it started writing (here: the val source turns out empty, after the new tokenizer
    and train.bin were written) leaves the earlier, complete outputs byte-identical and no temporary files."""
    src, empty = story_file(tmp_path / 'train.txt', shared_data, 60_000), tmp_path / 'empty.txt'
    empty.write_text('\n \n<|endoftext|>\n')
    out = tmp_path / 'out'
    prepare_main(f'--source={src}', '--val_fraction=0.1', '--vocab_size=300', f'--out_dir={out}')
    before = snapshot(out)
    with pytest.raises(ValueError) as e:
        prepare_main(f'--source={src}', f'--val_source={empty}', '--vocab_size=280', f'--out_dir={out}')
    assert one_line(e.value).startswith('no validation stories')
    assert snapshot(out) == before


def test_gpt2_tokenizer_and_max_stories_and_seeded_carve_out(shared_data, tmp_path):
    """--tokenizer=gpt2 writes GPT-2 ids (no tokenizer.json); --max_stories reads only the first N stories;
    the --val_fraction carve-out depends on the seed (the same seed gives the same split: see the --force test)."""
    src = shared_data / 'tinystories' / 'train-v2-head.txt'
    first = [s.strip() for s in src.read_text().split(EOT) if s.strip()][:40]
    runs = {}
    for name, seed in (('a', 1), ('c', 2)):
        prepare_main(f'--source={src}', '--tokenizer=gpt2', '--max_stories=40', '--val_fraction=0.3', f'--seed={seed}',
                     f'--out_dir={tmp_path / name}')
        runs[name] = decoded_stories(tmp_path / name, 'val')
        assert sorted(decoded_stories(tmp_path / name, 'train') + runs[name]) == sorted(first)
    assert runs['a'] != runs['c']
    meta = json.loads((tmp_path / 'a' / 'meta.json').read_text())
    assert (meta['tokenizer'], meta['tokenizer_file'], meta['vocab_size'], meta['eot_id']) == ('gpt2', None, 50257, 50256)
    assert not (tmp_path / 'a' / 'tokenizer.json').exists()


def test_invalid_utf8_is_replaced_and_counted(tmp_path, capsys):
    """Invalid UTF-8 does not crash: each bad sequence becomes U+FFFD, and the count is reported and recorded."""
    (tmp_path / 'a.txt').write_bytes(b'Good story \xff one.\n<|endoftext|>\nBad \xc3( two.\n<|endoftext|>\nFine three.\n')
    (tmp_path / 'v.txt').write_text('A valid val story.')
    out = tmp_path / 'out'
    prepare_main(f'--source={tmp_path / "a.txt"}', f'--val_source={tmp_path / "v.txt"}', '--vocab_size=260', f'--out_dir={out}')
    stdout = capsys.readouterr().out
    assert '2 sequences' in stdout and 'invalid UTF-8' in stdout
    assert decoded_stories(out, 'train') == ['Good story \ufffd one.', 'Bad \ufffd( two.', 'Fine three.']
    assert json.loads((out / 'meta.json').read_text())['invalid_utf8'] == 2


def test_big_input_goes_through_the_worker_pool_in_order(shared_data, tmp_path, monkeypatch, capsys):
    """An input of several batches is encoded by worker processes, and train.bin is still exactly
    <eot> + tokens of each story, in the source's order (batches shrunk to 64 KB so a small input makes many)."""
    monkeypatch.setattr(prepare, '_BATCH_CHARS', 1 << 16)
    src = story_file(tmp_path / 'train.txt', shared_data, 400_000)
    val = shared_data / 'tinystories' / 'format-sample-v2.txt'
    prepare_main(f'--source={src}', f'--val_source={val}', '--tokenizer=gpt2', '--num_proc=2', f'--out_dir={tmp_path / "out"}')
    assert 'encoding on 2 worker processes' in capsys.readouterr().out
    enc = tokenizer.load_gpt2(str(shared_data / 'gpt2'))
    want = [t for s in src.read_text().split(EOT) if s.strip() for t in [enc.eot_token] + enc.encode_ordinary(s.strip())]
    assert np.array_equal(np.fromfile(tmp_path / 'out' / 'train.bin', dtype=np.uint16), np.array(want, dtype=np.uint16))


BAD_INPUT = [
    (['--source=nowhere/stories.txt'], FileNotFoundError, 'nowhere/stories.txt not found'),
    (['--source={tmp}/x.csv'], ValueError, "unsupported file type '.csv'"),
    (['--source={tmp}/empty.txt'], ValueError, 'no training stories'),
    (['--source={tmp}/*.jsonl'], FileNotFoundError, 'no files match'),
    (['--source={tmp}/ok.txt', '--vocab_size=100'], ValueError, 'vocab_size=100 is too small'),
    (['--source={tmp}/ok.txt', '--val_source={tmp}/ok.txt', '--val_fraction=0.1'], ValueError, 'val_source and val_fraction both set'),
    (['--source={tmp}/ok.txt', '--tokenizer=sentencepiece'], ValueError, "tokenizer must be 'bpe' or 'gpt2'"),
    (['--source={tmp}/ok.txt', '--val_fraction=1.5'], ValueError, 'val_fraction must be in [0, 1)'),
    (['--source={tmp}/ok.txt', '--vocab_size=many'], ValueError, "'vocab_size' must be int"),
]


def bad_input_files(tmp_path):
    (tmp_path / 'x.csv').write_text('text\nhello\n')
    (tmp_path / 'empty.txt').write_text('\n\n  \n')
    (tmp_path / 'ok.txt').write_text('A story.\n\nAnother story.\n')


@pytest.mark.parametrize('args, error, message', BAD_INPUT)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, error, message):
    """Each bad input raises an exception whose one line names the problem, and no out_dir appears."""
    bad_input_files(tmp_path)
    with pytest.raises(error) as e:
        prepare_main(*[a.format(tmp=tmp_path) for a in args], f'--out_dir={tmp_path / "out"}')
    assert message in one_line(e.value)
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('args, error, message', [BAD_INPUT[0], BAD_INPUT[-1]])
def test_bad_input_at_the_command_line_is_one_stderr_line(tmp_path, args, error, message):
    """At the command line the same mistakes (one found by prepare.py's code, one by configure()) exit 1 with one
    stderr line and no traceback."""
    bad_input_files(tmp_path)
    p = run_prepare(*[a.format(tmp=tmp_path) for a in args], f'--out_dir={tmp_path / "out"}', check=False)
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [p.stderr.strip()] and message in p.stderr
    assert 'Traceback' not in p.stderr and not (tmp_path / 'out').exists()


# A prepare.py that pauses once it holds out_dir and has read the stories (in the middle of its work) until the
# file argv[1] exists: the first of two runs into one directory.
PAUSED = f"""
import pathlib, sys, time
sys.path.insert(0, {str(ROOT)!r})
import prepare, tokenizer
train_bpe, go = tokenizer.train_bpe, pathlib.Path(sys.argv[1])
def paused(*args, **kwargs):
    print('paused', flush=True)
    while not go.exists():
        time.sleep(0.05)
    return train_bpe(*args, **kwargs)
tokenizer.train_bpe = paused
prepare.main(sys.argv[2:])
"""


def test_a_second_prepare_into_the_same_out_dir_fails_naming_the_first(shared_data, tmp_path):
    """While one prepare.py works in out_dir, a second one exits 1 with one line naming the first (its process
    id and command) and touches nothing; the first then finishes and leaves complete outputs, no temporary files."""
    src = story_file(tmp_path / 'train.txt', shared_data, 30_000)
    out = tmp_path / 'out'
    prepare_main(f'--source={src}', '--val_fraction=0.1', '--vocab_size=270', f'--out_dir={out}')
    before = snapshot(out)
    first = subprocess.Popen([sys.executable, '-c', PAUSED, str(tmp_path / 'go'), f'--source={src}', '--val_fraction=0.1',
                              '--vocab_size=290', f'--out_dir={out}'], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    try:
        assert 'paused\n' in iter(first.stdout.readline, ''), 'the first prepare.py ended before it paused'
        second = run_prepare(f'--source={src}', '--val_fraction=0.1', '--vocab_size=290', f'--out_dir={out}', check=False)
        assert second.returncode == 1 and second.stderr.strip().splitlines() == [second.stderr.strip()]
        assert f'{out} is in use by process {first.pid}' in second.stderr and '--vocab_size=290' in second.stderr
        assert 'Traceback' not in second.stderr and snapshot(out) == before
    finally:
        (tmp_path / 'go').touch()
        first.stdout.read()
        assert first.wait(timeout=120) == 0
    assert sorted(snapshot(out)) == ['meta.json', 'tokenizer.json', 'train.bin', 'val.bin']
    assert data.read_meta(out)['vocab_size'] == 290 and decoded_stories(out, 'train')


@pytest.fixture
def small_fs(tmp_path):
    """A directory on its own 256 KB tmpfs (mounted when running as root), or None where one cannot be mounted."""
    mnt = tmp_path / 'small'
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', str(mnt)],
                                           capture_output=True).returncode:
        yield None
        return
    try:
        yield mnt
    finally:
        for _ in range(20):  # a worker process may still be letting go of it
            if subprocess.run(['umount', str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)


def test_a_full_disk_is_one_line_and_keeps_the_earlier_outputs(shared_data, tmp_path, small_fs, monkeypatch):
    """The disk filling up while prepare writes its outputs (a real 256 KB tmpfs as root; elsewhere every write to
    a .bin raising ENOSPC) is one line saying so and naming the file; the earlier outputs stay byte-identical
    and no temporary file is left."""
    out = (small_fs or tmp_path) / 'out'
    small, big = story_file(tmp_path / 'small.txt', shared_data, 5_000), story_file(tmp_path / 'big.txt', shared_data, 300_000)
    prepare_main(f'--source={small}', '--val_fraction=0.2', '--vocab_size=260', f'--out_dir={out}')
    before = snapshot(out)
    if small_fs is None:
        def full_disk_open(path, mode='r', *args, **kwargs):
            f = open(path, mode, *args, **kwargs)
            if '.bin.' in str(path):
                def write(data):
                    raise OSError(errno.ENOSPC, 'No space left on device')
                f.write = write
            return f
        monkeypatch.setattr(rundir, 'open', full_disk_open, raising=False)
    with pytest.raises(OSError) as e:
        prepare_main(f'--source={big}', '--val_fraction=0.2', '--vocab_size=260', f'--out_dir={out}')
    assert e.value.errno == errno.ENOSPC
    assert re.fullmatch(rf'the disk is full \({out}/(train|val)\.bin\): free some space or choose another directory, '
                        'then run again', one_line(e.value))
    assert snapshot(out) == before


def test_an_unwritable_out_dir_is_one_line_and_changes_nothing(shared_data, tmp_path, small_fs):
    """out_dir an existing file, or below one: one line, the file untouched. A read-only out_dir (a tmpfs remounted
    read-only as root; elsewhere a directory without write permission) that holds this very preparation is
    still a no-op; asked to redo it (--force), it fails in one line and the outputs stay byte-identical."""
    (tmp_path / 'a_file').write_text('mine')
    for out_dir, message in ((tmp_path / 'a_file', f'out_dir {tmp_path}/a_file is a file; pass a directory'),
                             (tmp_path / 'a_file' / 'out', 'part of the path is a file, not a directory')):
        with pytest.raises((ValueError, OSError)) as e:
            prepare_main(f'--source={shared_data}/tinystories/format-sample-v2.txt', f'--out_dir={out_dir}')
        assert message in one_line(e.value) and (tmp_path / 'a_file').read_text() == 'mine'
    if small_fs is None and os.geteuid() == 0:
        pytest.skip('root cannot be kept from writing without a read-only mount, and none could be mounted here')
    out = (small_fs or tmp_path) / 'out'
    args = (f'--source={story_file(tmp_path / "s.txt", shared_data, 5_000)}', '--val_fraction=0.2', '--vocab_size=260',
            f'--out_dir={out}')
    prepare_main(*args)
    before = snapshot(out)
    if small_fs is not None:
        subprocess.run(['mount', '-o', 'remount,ro', str(small_fs)], check=True)
    else:
        os.chmod(out, 0o555)
    try:
        prepare_main(*args)  # nothing to do, read-only or not
        with pytest.raises(OSError) as e:
            prepare_main(*args, '--force')
        assert re.match(r'(the filesystem is read-only|permission denied) \(', one_line(e.value)), one_line(e.value)
        assert snapshot(out) == before
    finally:
        if small_fs is None:
            os.chmod(out, 0o755)
        else:
            subprocess.run(['mount', '-o', 'remount,rw', str(small_fs)])


def test_files_prepare_did_not_write_are_never_removed_or_replaced(shared_data, tmp_path):
    """A gpt2 run leaves a tokenizer.json (and any other file) it did not write alone; a bpe run refuses to replace
    it, and a train.bin no meta.json of prepare.py describes is refused too, unless --force. A tokenizer.json that
    an earlier bpe run wrote is removed by a later gpt2 run (it would mislead)."""
    src = story_file(tmp_path / 's.txt', shared_data, 5_000)
    theirs, out = tmp_path / 'theirs', tmp_path / 'out'
    theirs.mkdir()
    (theirs / 'tokenizer.json').write_text('{"somebody": "else"}')
    (theirs / 'notes.txt').write_text('my notes')
    prepare_main(f'--source={src}', '--val_fraction=0.2', '--tokenizer=gpt2', f'--out_dir={theirs}')
    assert (theirs / 'tokenizer.json').read_text() == '{"somebody": "else"}' and (theirs / 'notes.txt').exists()
    with pytest.raises(ValueError) as e:
        prepare_main(f'--source={src}', '--val_fraction=0.2', '--vocab_size=260', f'--out_dir={theirs}')
    assert one_line(e.value) == (f'{theirs} holds tokenizer.json that no meta.json of prepare.py describes; '
                                 'pass another --out_dir, or --force to replace them')
    (theirs / 'meta.json').unlink()  # now train.bin and val.bin are nobody's either
    with pytest.raises(ValueError, match='holds train.bin, val.bin that no meta.json'):
        prepare_main(f'--source={src}', '--val_fraction=0.2', '--tokenizer=gpt2', '--max_stories=3', f'--out_dir={theirs}')
    prepare_main(f'--source={src}', '--val_fraction=0.2', '--vocab_size=260', f'--out_dir={theirs}', '--force')
    assert data.read_meta(theirs)['tokenizer_file'] == 'tokenizer.json' and (theirs / 'notes.txt').exists()
    prepare_main(f'--source={src}', '--val_fraction=0.2', '--vocab_size=260', f'--out_dir={out}')
    prepare_main(f'--source={src}', '--val_fraction=0.2', '--tokenizer=gpt2', f'--out_dir={out}')
    assert sorted(snapshot(out)) == ['meta.json', 'train.bin', 'val.bin']
