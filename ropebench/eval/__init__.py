"""Evaluation of finished runs: one probe runner (``runner``) that perplexity (``perplexity``) and passkey
retrieval (``passkey``) plug into, and the evaluation lengths (``lengths``).

Layer: eval imports core, data and run; it never imports report or cli. Nothing is imported here, so that
``ropebench.eval.lengths`` (torch-free) stays cheap to import.
"""
