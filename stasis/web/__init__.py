"""The HTTP side of stasis: the Site, the resource tree and the proxy resource."""
