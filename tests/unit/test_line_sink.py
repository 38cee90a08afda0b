from labs.providers.ssh import _LineSink


def test_lines_split_across_chunks_and_flushes_arrive_whole():
    seen = []
    sink = _LineSink(seen.append)
    for chunk in ["@@tok end ", "check.id", " 1\nsecond ", "line\nlast"]:
        sink.write(chunk)
        sink.flush()  # invoke flushes after every chunk
    assert seen == ["@@tok end check.id 1", "second line"]
    sink.finish()
    assert seen[-1] == "last"
