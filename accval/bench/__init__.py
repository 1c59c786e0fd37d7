"""``accval bench``: the chain's kernels against their baselines, side by side, on the GPU in hand.

Every row is timed in the same process with ``triton.testing.do_bench`` (median and p20/p80 of
events, L2 flushed before each repetition) on CUDA-graph replays, and "as called": the function a
caller uses, host path included (validation, dispatch, allocation, provenance), called back to back
without a graph. The RoPE layout (NEOX half-split, GPT-J interleaved pairs) is a dimension of the
producer and chain rows. Bytes are counted from the real tensors; the device copy ceiling (the best
read + write TB/s over copies of 256 MiB to 1 GiB) is measured in the same run. Results go to JSON,
Markdown (opening with issue 21's targets, met or not, worst case and where) and a PNG under ``--out``.

The modules, read in this order:

- :mod:`.timing`: the timing API (:func:`~.timing.time_cuda`, :func:`~.timing.as_called_us`,
  :func:`~.timing.copy_us`, :func:`~.timing.read_once_us`, the copy ceiling) and the inputs at the DeepSeek-V4-Pro shapes
  (:func:`~.timing.producer_inputs`, :func:`~.timing.consumer_inputs`); what scripts build on.
- :mod:`.rows`: the rows of ``accval bench`` (each op's implementations and baselines) and
  :func:`~.rows.run`, the command.
- :mod:`.targets`: issue 21's targets over a result (pure: met, missed, or missed by less than the
  spread of timing the same row twice; the worst case and where).
- :mod:`.render`: the result as Markdown, and the JSON, Markdown and PNG files.
- :mod:`.sweep`: ``accval bench --sweep``, every candidate launch (the measurements behind the
  dispatch tables in ``kernels``).

:mod:`.targets` and :mod:`.render` import neither torch nor the kernels, so reading results is cheap.
"""
