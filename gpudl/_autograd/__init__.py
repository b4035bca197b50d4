"""The submodules of gpudl.autograd (``graph``, ``forward_ad``, ``variable``): import them as
``gpudl.autograd.graph`` and so on; gpudl.autograd's ``__path__`` points here."""
