"""The ``sora2`` command line (needs the ``cli`` extra: rich). Entry: :func:`sora2_async.cli.main`.

Modules, one job each: ``args`` (the parser), ``inputs`` (reading PROMPTS), ``plan`` (what
the journal says is left, the manifest), ``tracker`` (counts and videos in flight),
``display`` (rich or JSON), ``runner`` (the batch engine), ``commands`` and ``demo`` (the
subcommands), ``app`` (dispatch and errors).
"""
