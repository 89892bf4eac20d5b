"""serve.py, live on a free loopback port with the tiny checkpoint: OpenAI's own client gets completions, streams,
n choices and seeded repeats that equal decode.generate's draws; bad requests get 400 with one line; the page
streams a story in a real headless browser; 32 concurrent streams all complete, then a full server answers 429
and a client that leaves frees its rows; Ctrl-C lets the streams in flight finish."""
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT))
import tokenizer  # noqa: E402
from decode import generate  # noqa: E402
from model import GPT  # noqa: E402

openai = pytest.importorskip('openai')
CHROMIUM = '/usr/bin/chromium'  # Debian's package: Playwright's own browser download cannot work here
MAX_BATCH, MAX_QUEUE, MAX_TOKENS = 32, 16, 1024


class Server:
    """A serve.py process; its output lines are collected by a thread (a full pipe would block the server)."""

    def __init__(self, ckpt_dir):
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / 'serve.py'), f'--out_dir={ckpt_dir}', '--port=0', '--device=cpu',
             '--dtype=float32', '--compile=False', '--threads=1', f'--max_batch={MAX_BATCH}',
             f'--max_queue={MAX_QUEUE}', f'--max_tokens={MAX_TOKENS}'],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, 'OMP_NUM_THREADS': '1'})
        self.lines, self.started = [], threading.Event()
        threading.Thread(target=self.read, daemon=True).start()
        if not self.started.wait(120) or self.proc.poll() is not None:
            self.proc.kill()
            raise AssertionError('serve.py did not start:\n' + '\n'.join(self.lines))
        self.url = next(line for line in self.lines if line.startswith('serving')).split(' on ')[1].split()[0]

    def read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip('\n'))
            if line.startswith('serving'):
                self.started.set()
        self.started.set()

    def health(self):
        return httpx.get(self.url + '/health').json()

    def wait_idle(self, seconds=30):
        """The server's load once nothing decodes or waits (seconds: a deadline for a hung server, not a timing)."""
        deadline = time.monotonic() + seconds
        while (h := self.health())['decoding'] or h['waiting']:
            assert time.monotonic() < deadline, h
            time.sleep(0.05)
        return h


@pytest.fixture(scope='module')
def server(tiny_ckpt):
    s = Server(tiny_ckpt)
    yield s
    if s.proc.poll() is None:
        s.proc.send_signal(signal.SIGINT)
        try:
            s.proc.wait(30)
        except subprocess.TimeoutExpired:
            s.proc.kill()


@pytest.fixture(scope='module')
def client(server):
    return openai.OpenAI(base_url=server.url + '/v1', api_key='unused', max_retries=0, timeout=60)


@pytest.fixture(scope='module')
def tiny(tiny_ckpt):
    model, ckpt = GPT.from_checkpoint(str(tiny_ckpt / 'best.pt'))
    return model, tokenizer.from_checkpoint(ckpt, 'best.pt')


def test_completion_stream_n_and_seed_with_the_official_client(client, tiny):
    """A completion is the story decode.generate draws after <|endoftext|> + prompt with a generator seeded `seed`
    (choice i: seed + i), cut at <|endoftext|>; usage counts its tokens; the stream's pieces join into the same
    text; n choices come back indexed; the same seed gives the same text twice, another seed another text."""
    model, enc = tiny
    name = client.models.list().data[0].id
    ask = dict(model=name, prompt='Once upon a time', max_tokens=40, temperature=1.0, top_p=0.95, seed=11)
    one = client.completions.create(**ask)
    ids = [enc.eot_token] + enc.encode('Once upon a time')
    want = []
    for n, choice in ((1, one.choices[0]), *((3, c) for c in client.completions.create(**ask, n=3).choices)):
        g = torch.Generator().manual_seed(11 + (choice.index if n > 1 else 0))
        tokens = [t.item() for t in generate(model, torch.tensor([ids]), 40, temperature=1.0, top_p=0.95,
                                             generator=g, eos_id=enc.eot_token)]
        ended = enc.eot_token in tokens
        tokens = tokens[:tokens.index(enc.eot_token)] if ended else tokens
        assert choice.text == enc.decode(tokens) and choice.finish_reason == ('stop' if ended else 'length')
        want.append(len(tokens))
    assert one.usage.prompt_tokens == len(ids) and one.usage.completion_tokens == want[0]
    assert client.completions.create(**ask).choices[0].text == one.choices[0].text
    assert client.completions.create(**{**ask, 'seed': 12}).choices[0].text != one.choices[0].text
    pieces, finish = [], None
    for chunk in client.completions.create(**ask, stream=True):
        pieces += [c.text for c in chunk.choices]
        finish = chunk.choices[0].finish_reason or finish
    assert len(pieces) > 5 and ''.join(pieces) == one.choices[0].text and finish == one.choices[0].finish_reason


def test_stop_strings_greedy_and_the_end_of_text(client):
    """Text is cut before a stop string (finish_reason 'stop'), even when it arrives split across tokens and in a
    stream; greedy decoding repeats exactly; ignore_eos decodes max_tokens tokens whatever the model says."""
    ask = dict(model='any', prompt='Once upon a time', max_tokens=60, temperature=0)
    full = client.completions.create(**ask).choices[0].text
    assert full == client.completions.create(**ask).choices[0].text
    stop = full[12:16]  # four characters from the middle: usually parts of two tokens
    cut = client.completions.create(**ask, stop=[stop, 'never appears']).choices[0]
    assert cut.text == full[:full.index(stop)] and cut.finish_reason == 'stop'
    streamed = ''.join(c.choices[0].text for c in client.completions.create(**ask, stop=stop, stream=True))
    assert streamed == cut.text
    long = client.completions.create(**{**ask, 'temperature': 1.0, 'max_tokens': 150}, extra_body={'ignore_eos': True})
    assert long.usage.completion_tokens == 150 and long.choices[0].finish_reason == 'length'


@pytest.mark.parametrize('fields,words', [
    (dict(temperature=-0.5), "'temperature' is -0.5"),
    (dict(max_tokens=MAX_TOKENS + 1), "'max_tokens' is 1025"),
    (dict(prompt='Once upon a time ' * 40), 'tokens with the <|endoftext|> put before it; this model reads at most 64'),
    (dict(extra_body={'top_k': 'fifty'}), "'top_k' must be an integer"),
    (dict(n=MAX_BATCH + 1), "'n' is 33"),
    (dict(extra_body={'stream': 'yes'}), "'stream' must be true or false"),
    (dict(extra_body={'colour': 'blue'}), "unknown field 'colour'"),
    (dict(logprobs=2), "'logprobs' is not supported"),
])
def test_bad_requests_get_400_with_one_line_saying_what_is_wrong(client, fields, words):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(**{'model': 'any', 'prompt': 'Once', 'max_tokens': 5, **fields})
    message = e.value.body['message']
    assert words in message and '\n' not in message, message


@pytest.mark.parametrize('body,words', [
    (b'{"prompt": "Once upon', 'not valid JSON'),
    ('{"prompt": "Once"}'.encode('utf-16'), 'not UTF-8'),
    (b'["Once upon a time"]', 'must be a JSON object'),
    (b'{"prompt": 12}', "'prompt' must be a string"),
])
def test_bodies_that_are_not_a_json_object_get_400(server, body, words):
    r = httpx.post(server.url + '/v1/completions', content=body, headers={'Content-Type': 'application/json'})
    message = r.json()['error']['message']
    assert r.status_code == 400 and words in message and '\n' not in message, message


def test_the_page_streams_a_story_in_a_headless_browser(server, tmp_path):
    """Chromium opens /, a person types a beginning and presses Write: the story grows under it as tokens stream
    in, the status line reports the end, and Stop ends a long story early."""
    sync_api = pytest.importorskip('playwright.sync_api')
    if not os.path.exists(CHROMIUM):
        pytest.skip(f'{CHROMIUM} not found: `make test` installs Debian\'s chromium package')
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
            '--disable-component-update', '--disable-sync'])
        page = browser.new_page()
        page.goto(server.url + '/')
        page.fill('#prompt', 'The little dog')
        page.fill('#length', '30')
        page.click('#go')
        page.wait_for_function("document.querySelector('#story').textContent.length > 'The little dog'.length + 5")
        page.wait_for_function("!document.querySelector('#go').disabled")  # the stream ended
        story = page.text_content('#story')
        assert story.startswith('The little dog') and len(story) > 20
        assert 'tokens in' in page.text_content('#status'), page.text_content('#status')
        page.fill('#length', str(MAX_TOKENS))  # a long one, stopped by the button once text appears
        page.evaluate("document.querySelector('#temperature').value = '1.5'")
        page.click('#go')
        page.wait_for_function("document.querySelector('#story').textContent.length > 'The little dog'.length + 5")
        page.click('#stop')
        page.wait_for_function("document.querySelector('#status').textContent.startsWith('stopped')")
        page.screenshot(path=str(tmp_path / 'page.png'))
        browser.close()
    server.wait_idle()  # the stopped story's row is free again


async def stream(http, url, max_tokens, seed):
    """One streamed completion read to its end -> (tokens, finish reason, seconds); raises if it is incomplete."""
    t0, tokens, finish, done = time.perf_counter(), 0, None, False
    async with http.stream('POST', url + '/v1/completions', json=dict(
            prompt='Once upon a time', max_tokens=max_tokens, temperature=1.0, top_k=50, seed=seed, stream=True,
            ignore_eos=True)) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line == 'data: [DONE]':
                done = True
            elif line.startswith('data: '):
                choice = json.loads(line[6:])['choices'][0]
                tokens += 1
                finish = choice['finish_reason'] or finish
    assert done and finish == 'length' and tokens == max_tokens + 1, (done, finish, tokens)  # + the finish chunk
    return max_tokens, time.perf_counter() - t0


def test_32_concurrent_streams_all_complete_then_a_full_server_says_429(server):
    """For ~20 s, 32 clients each stream one story after another (lengths vary, so sequences join and leave the
    batch at every step and windows slide): no errors, every stream complete. Then rows and queue are filled
    (n=32 decoding, n=16 waiting) and the next request gets 429 with Retry-After; when those clients leave, their
    rows and queue places are freed and the server answers again."""
    rng = random.Random(0)

    async def load():
        results = []
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as http:
            end = time.monotonic() + 20

            async def client(k):
                while time.monotonic() < end:
                    results.append(await stream(http, server.url, rng.randint(8, 120), k * 1000 + len(results)))
            t0 = time.perf_counter()
            await asyncio.gather(*(client(k) for k in range(32)))
            return results, time.perf_counter() - t0

    results, seconds = asyncio.run(load())
    latencies = sorted(s for _, s in results)
    print(f"\n{len(results)} streams, {sum(t for t, _ in results) / seconds:.0f} tokens/s, p50 "
          f"{latencies[len(latencies) // 2]:.2f}s, p99 {latencies[int(len(latencies) * 0.99)]:.2f}s, 0 errors")
    assert len(results) >= 32
    server.wait_idle()

    ask = dict(prompt='Once', max_tokens=MAX_TOKENS, ignore_eos=True, stream=True)
    with httpx.Client(timeout=60) as a, httpx.Client(timeout=60) as b:
        with a.stream('POST', server.url + '/v1/completions', json={**ask, 'n': MAX_BATCH}) as decoding:
            lines = decoding.iter_lines()  # (kept: closing the iterator would close the connection)
            next(lines)  # a first token: all 32 rows are decoding
            with b.stream('POST', server.url + '/v1/completions', json={**ask, 'n': MAX_QUEUE}) as waiting:
                assert waiting.status_code == 200
                deadline = time.monotonic() + 30
                while (h := server.health())['waiting'] < MAX_QUEUE:
                    assert time.monotonic() < deadline and h['decoding'] == MAX_BATCH, h
                    time.sleep(0.01)
                full = httpx.post(server.url + '/v1/completions', json={'prompt': 'Once', 'max_tokens': 5})
                assert full.status_code == 429 and full.headers['Retry-After'] == '1'
                assert 'full' in full.json()['error']['message']
    server.wait_idle()  # both clients left: every row and queue place is free again
    assert httpx.post(server.url + '/v1/completions', json={'prompt': 'Once', 'max_tokens': 5}).status_code == 200


def test_ctrl_c_lets_streams_in_flight_finish_then_exits(server):
    """(Runs last: it stops the module's server.) Ctrl-C during a stream: the server stops taking requests, the
    stream still gets every token and [DONE], and the process exits 0."""
    with httpx.Client(timeout=60) as http:
        with http.stream('POST', server.url + '/v1/completions', json=dict(
                prompt='Once', max_tokens=300, ignore_eos=True, stream=True)) as r:
            lines = r.iter_lines()
            next(lines)
            server.proc.send_signal(signal.SIGINT)
            rest = [line for line in lines if line.startswith('data: ')]
    assert rest[-1] == 'data: [DONE]' and len(rest) == 300 + 1  # tokens 2..300, the finish and [DONE]
    assert server.proc.wait(30) == 0 and server.lines[-1] == 'stopped'
