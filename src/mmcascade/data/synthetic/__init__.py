"""Generated data, built offline and deterministically: nothing here needs the network.

Everything is drawn by code or read from files inside installed packages (easy-VQA, conformal-clip-data's
simulated textiles, scikit-learn's digits; see :mod:`~mmcascade.data.synthetic.sources`):

- :mod:`~mmcascade.data.synthetic.scenes`: compositional scenes of coloured shapes with exact ground truth;
- :mod:`~mmcascade.data.synthetic.starter_split`: the starter embedder's training and held-out records;
- :mod:`~mmcascade.data.synthetic.mini_benchmark`: a mini MMEB-V2 benchmark of held-out data in MMEB's formats;
- :mod:`~mmcascade.data.synthetic.teacher`: the templated teacher, reasoning traces written from the
  starter data's ground truth (a stand-in for a large VLM teacher).

The same seed and package versions give the same files.
"""
