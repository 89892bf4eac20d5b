"""configurator.py: config files and --key=value override module-level settings, and mistakes are caught."""
import errno
import subprocess
import sys

import pytest

import configurator
from configurator import configure, describe


def settings():
    return dict(learning_rate=6e-4, max_iters=100, compile=True, out_dir='out', betas=(0.9, 0.95), ckpt=None)


def test_command_line_overrides_and_returns_effective_config():
    g = settings()
    config = configure(g, ['--max_iters=5', '--out_dir=run1'])
    assert g['max_iters'] == 5 and g['out_dir'] == 'run1'
    assert config == g


def test_int_is_accepted_for_float_and_integral_float_for_int():
    g = settings()
    configure(g, ['--learning_rate=1', '--max_iters=1e4'])
    assert g['learning_rate'] == 1.0 and type(g['learning_rate']) is float
    assert g['max_iters'] == 10000 and type(g['max_iters']) is int


@pytest.mark.parametrize('text,value', [('True', True), ('false', False), ('1', True), ('0', False), ('', True)])
def test_booleans_accept_common_spellings(text, value):
    g = settings()
    g['compile'] = not value
    configure(g, ['--compile' if text == '' else f'--compile={text}'])
    assert g['compile'] is value


def test_value_may_contain_equals_and_strings_stay_strings():
    g = settings()
    configure(g, ['--out_dir=a=b', '--ckpt=3'])
    assert g['out_dir'] == 'a=b'
    assert g['ckpt'] == 3  # a None default takes any literal


@pytest.mark.parametrize('arg,message', [
    ('--learnig_rate=1', "unknown setting 'learnig_rate'; did you mean 'learning_rate'?"),
    ('--max_iters=ten', "'max_iters' must be int"),
    ('--max_iters=1.5', "'max_iters' must be int"),
    ('--compile=maybe', "'compile' must be bool"),
    ('--max_iters', '--max_iters needs a value'),
    ('nonexistent_config.py', 'config file nonexistent_config.py'),
])
def test_mistakes_raise_one_line_naming_the_problem(arg, message):
    with pytest.raises(ValueError) as e:
        configure(settings(), [arg])
    assert message in str(e.value) and '\n' not in str(e.value)


def test_config_file_sees_current_settings_and_is_type_checked(tmp_path):
    f = tmp_path / 'cfg.py'
    f.write_text('import math\nmax_iters = 2 * max_iters\nlearning_rate = 1\nbetas = [0.8, 0.99]\n')
    g = settings()
    configure(g, [str(f), '--max_iters=7'])  # later arguments win
    assert g['max_iters'] == 7 and g['learning_rate'] == 1.0 and g['betas'] == (0.8, 0.99)
    g = settings()
    configure(g, [str(f)])
    assert g['max_iters'] == 200


def test_unknown_key_in_config_file_is_an_error_unless_files_are_not_strict(tmp_path):
    f = tmp_path / 'cfg.py'
    f.write_text('max_iter = 5\nmax_iters = 9\n')
    with pytest.raises(ValueError, match=r"cfg.py: unknown setting 'max_iter'; did you mean 'max_iters'"):
        configure(settings(), [str(f)])
    g = settings()
    configure(g, [str(f)], strict_files=False)  # bench.py reads train configs: foreign keys are skipped
    assert g['max_iters'] == 9 and 'max_iter' not in g


def test_help_lists_settings_and_exits_zero(capsys):
    with pytest.raises(SystemExit) as e:
        configure(settings(), ['--help'])
    assert e.value.code == 0
    assert '--learning_rate=0.0006' in capsys.readouterr().out


@pytest.mark.parametrize('source,message', [
    ('max_iters = (\n', r'cfg.py line \d: .*fix that line'),
    ('x = 1\nmax_iters = 1 / 0\n', r'cfg.py line 2 raised ZeroDivisionError: division by zero; fix that line'),
    ('learning_rate = lambda: 1e-3\n', r"'learning_rate' must be float like 0.0006, got <function"),
    ('ckpt = [1, 2]\n', r"'ckpt' must be a plain value"),
    (b'\x80\x00binary', r'is not a Python text file'),
])
def test_broken_config_files_are_one_line_errors_naming_the_file(tmp_path, source, message):
    f = tmp_path / 'cfg.py'
    f.write_bytes(source) if isinstance(source, bytes) else f.write_text(source)
    with pytest.raises(ValueError, match=message) as e:
        configure(settings(), [str(f)])
    assert str(f) in str(e.value) and '\n' not in str(e.value)


def test_a_bare_key_value_is_taken_for_a_missing_file_and_the_flag_is_suggested():
    with pytest.raises(ValueError, match='did you mean --max_iters=5'):
        configure(settings(), ['max_iters=5'])


def test_config_files_may_define_helpers_that_are_not_settings(tmp_path):
    f = tmp_path / 'cfg.py'
    f.write_text('import math\ndef half(x):\n    return x / 2\nlearning_rate = half(1e-3)\n')
    g = settings()
    configure(g, [str(f)])
    assert g['learning_rate'] == 5e-4


@pytest.mark.parametrize('e,line', [
    (OSError(errno.ENOSPC, 'No space left on device', 'out/last.pt'), 'the disk is full (out/last.pt): free some'),
    (OSError(errno.EROFS, 'Read-only file system', '/ro/x'), 'the filesystem is read-only (/ro/x): choose a writable'),
    (PermissionError(errno.EACCES, 'Permission denied', '/x'), 'permission denied (/x)'),
    (BlockingIOError(errno.EWOULDBLOCK, 'out is in use by process 7'), 'out is in use by process 7'),
    (ValueError('top_p=2 must lie in (0, 1]\n'), 'top_p=2 must lie in (0, 1]'),
    (KeyboardInterrupt(), 'interrupted'),
    (KeyError('bug'), None), (TypeError('bug'), None), (AssertionError(), None),
])
def test_user_caused_exceptions_read_as_one_line_and_bugs_keep_their_traceback(e, line):
    if line is None:
        assert describe(e) is None
    else:
        assert describe(e).startswith(line) and '\n' not in describe(e)


SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from configurator import configure
x = 1
configure(globals())
if x == 1:
    raise ValueError('x=1 is wrong; pass --x=2')
if x == 2:
    raise KeyError('a bug')
if x == 3:
    for i in range(100000):
        print('story ' * 20)
"""


def test_scripts_exit_with_one_line_or_quietly_and_debug_shows_the_traceback(tmp_path):
    script = tmp_path / 's.py'
    script.write_text(SCRIPT.format(root=str(configurator.__file__).rsplit('/', 1)[0]))
    run = lambda *a: subprocess.run([sys.executable, str(script), *a], capture_output=True, text=True)
    p = run()
    assert p.returncode == 1 and p.stderr == 'x=1 is wrong; pass --x=2\n'
    p = run('--x=2')  # a bug: the traceback stays
    assert p.returncode == 1 and 'Traceback' in p.stderr and "KeyError: 'a bug'" in p.stderr
    p = run('--debug=True')
    assert p.returncode == 1 and 'Traceback' in p.stderr and 'x=1 is wrong' in p.stderr
    p = run('--x=1', '--debug')  # a bare --debug works too
    assert 'Traceback' in p.stderr
    # the reader of stdout leaves early (| head): no BrokenPipeError, no message, success
    p = subprocess.run(f'{sys.executable} {script} --x=3 | head -c 20', shell=True, capture_output=True, text=True)
    assert p.stdout == 'story story story st' and p.stderr == ''
    p = subprocess.run(f'set -o pipefail; {sys.executable} {script} --x=3 | head -c 20', shell=True,
                       executable='/bin/bash', capture_output=True, text=True)
    assert p.returncode == 0
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env={'RANK': '1'})
    assert p.returncode == 1 and p.stderr == ''  # under torchrun only rank 0 speaks
