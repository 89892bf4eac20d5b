"""rundir.py: one writer per directory, files that appear whole or not at all, damaged logs named."""
import errno
import os
import signal
import subprocess
import sys
import time

import pytest

import rundir
from conftest import ROOT

HOLD = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
import rundir
lock = rundir.lock(sys.argv[1])
print('locked', flush=True)
time.sleep(60)
"""


def hold(directory):
    p = subprocess.Popen([sys.executable, '-c', HOLD, str(directory), '--out_dir=x'], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'locked'
    return p


def test_a_locked_directory_refuses_a_second_process_naming_it_until_the_first_dies(tmp_path):
    p = hold(tmp_path / 'run')
    try:
        with pytest.raises(BlockingIOError) as e:
            rundir.lock(tmp_path / 'run')
        assert f'process {p.pid}' in e.value.strerror and '--out_dir=x' in e.value.strerror
        assert 'in use' in e.value.strerror and '\n' not in e.value.strerror
    finally:
        p.send_signal(signal.SIGKILL)  # kill -9: the OS releases the lock, nothing is left stuck
        p.wait()
    f = rundir.lock(tmp_path / 'run')
    assert f'process {os.getpid()}' in (tmp_path / 'run' / '.lock').read_text()
    f.close()


def test_taking_a_lock_removes_temporary_files_of_dead_writers_only(tmp_path):
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f'last.pt.{dead}.tmp').write_text('half a checkpoint')
    (tmp_path / f'eval.json.{os.getpid()}.tmp').write_text('being written by a live process')
    (tmp_path / 'notes.tmp').write_text('not ours')
    rundir.lock(tmp_path).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(['.lock', f'eval.json.{os.getpid()}.tmp', 'notes.tmp'])


def test_atomic_open_replaces_whole_or_keeps_the_old_file(tmp_path):
    path = tmp_path / 'a.json'
    rundir.write_text(path, 'old')
    with pytest.raises(RuntimeError):
        with rundir.atomic_open(path) as f:
            f.write('half of the new')
            raise RuntimeError('crash mid-write')
    assert path.read_text() == 'old' and os.listdir(tmp_path) == ['a.json']
    with rundir.atomic_open(path, 'wb') as f:
        f.write(b'new')
        assert path.read_text() == 'old'  # readers see the old file until the new one is complete
    assert path.read_text() == 'new' and os.listdir(tmp_path) == ['a.json']


def test_a_full_disk_names_the_file_and_leaves_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / 'last.pt'
    rundir.write_text(path, 'previous checkpoint')

    def full(*args):
        raise OSError(errno.ENOSPC, 'No space left on device')
    with pytest.raises(OSError) as e:
        with rundir.atomic_open(path, 'wb') as f:
            monkeypatch.setattr(f, 'write', full)
            f.write(b'x' * 100)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert path.read_text() == 'previous checkpoint' and os.listdir(tmp_path) == ['last.pt']


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists('/usr/bin/mount'), reason='needs root to mount a tmpfs')
def test_a_really_full_disk_on_a_tiny_tmpfs(tmp_path):
    mnt = tmp_path / 'small'
    mnt.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', str(mnt)], capture_output=True).returncode:
        pytest.skip('cannot mount a tmpfs here')
    try:
        rundir.write_text(mnt / 'x', 'small')
        with pytest.raises(OSError) as e:
            rundir.write_text(mnt / 'x', 'y' * 200_000)
        assert e.value.errno == errno.ENOSPC and e.value.filename == str(mnt / 'x')
        assert (mnt / 'x').read_text() == 'small' and os.listdir(mnt) == ['x']
    finally:
        subprocess.run(['umount', str(mnt)])


def test_read_metrics_drops_a_torn_last_line_and_names_a_damaged_one(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    path.write_text('{"kind": "eval", "iter": 0}\n{"kind": "train", "iter": 10}\n{"kind": "tra')
    assert [r['iter'] for r in rundir.read_metrics(path)] == [0, 10]
    path.write_text('{"kind": "eval", "iter": 0}\n{"kind": "tr\n{"kind": "train", "iter": 10}\n')
    with pytest.raises(ValueError, match='metrics.jsonl line 2 is damaged'):
        rundir.read_metrics(path)


def test_run_files_and_find_checkpoint(tmp_path):
    assert rundir.run_files(tmp_path) == []
    (tmp_path / 'metrics.jsonl').write_text('')
    (tmp_path / 'data.txt').write_text('not a run file')
    assert rundir.run_files(tmp_path) == []  # an empty log holds nothing of value
    (tmp_path / 'best.pt').write_bytes(b'x')
    (tmp_path / 'metrics.jsonl').write_text('{"kind": "eval", "iter": 0}\n')
    assert rundir.run_files(tmp_path) == ['best.pt', 'metrics.jsonl']
    assert rundir.find_checkpoint(tmp_path, 'best') == str(tmp_path / 'best.pt')
    assert rundir.find_checkpoint(tmp_path, 'best.pt') == str(tmp_path / 'best.pt')
    with pytest.raises(FileNotFoundError, match=f'no checkpoint at {tmp_path}/last.pt; train one'):
        rundir.find_checkpoint(tmp_path, 'last')
