"""Fast GPAE kernels (installed as ``gpae_ref.kernels``; never import a bare ``kernels``)."""
