"""Instance masks from polygons, filled on the output device by torch (DALI has no polygon rasterizer).

A pixel belongs to a polygon when its centre is inside it (even-odd rule); an object's mask is the union of its
polygons, as pycocotools merges them. The fill is a scanline parity count: every edge adds one crossing per pixel
row it spans, at the first pixel whose centre lies right of it, and a running sum along the row gives each pixel
its parity. The work is O(edges x rows + polygons x pixels), one pass for a whole batch, in chunks of polygons
that bound the memory.
"""

from __future__ import annotations

__all__ = ["rasterize"]

CHUNK_ELEMENTS = 1 << 24  # int32 crossings grid per pass: 64 MiB


def _ramp(counts):
    """For counts [2, 3]: [0, 1, 0, 1, 2] (the position of each element inside its group)."""
    import torch

    ends = torch.cumsum(counts, 0)
    return torch.arange(int(ends[-1]) if len(ends) else 0, device=counts.device) - torch.repeat_interleave(
        ends - counts, counts
    )


def rasterize(polygons, vertices, objects: int, height: int, width: int, scale):
    """Masks B x objects x height x width (bool, on the tensors' device) from a padded batch of polygons.

    polygons: B x P x 3 int [object, first vertex, end vertex), rows of -1 padding; vertices: B x V x 2 float
    [x, y] in units of `scale`; scale: B x 2 float, the pixels per unit along x and y (for normalized vertices,
    the width and height of the image they cover, which may be smaller than the mask: the rest stays empty)."""
    import torch

    device = vertices.device
    masks = torch.zeros((polygons.shape[0] * objects, height, width), dtype=torch.uint8, device=device)
    b, p = torch.nonzero(polygons[..., 0] >= 0, as_tuple=True)
    if not len(b) or not objects:
        return masks.view(polygons.shape[0], objects, height, width).bool()
    obj, first, end = (polygons[b, p, i].long() for i in range(3))
    keep = (end - first >= 3) & (obj < objects)
    b, obj, first, end = b[keep], obj[keep], first[keep], end[keep]
    n = end - first
    edge_poly = torch.repeat_interleave(torch.arange(len(n), device=device), n)
    k = _ramp(n)
    v0 = first[edge_poly] + k
    v1 = first[edge_poly] + (k + 1) % n[edge_poly]
    eb = b[edge_poly]
    px = scale.to(vertices.dtype)[eb]
    a, c = vertices[eb, v0] * px, vertices[eb, v1] * px
    lo = torch.ceil(torch.minimum(a[:, 1], c[:, 1]) - 0.5).clamp(0, height).long()
    hi = torch.ceil(torch.maximum(a[:, 1], c[:, 1]) - 0.5).clamp(0, height).long()
    rows = (hi - lo).clamp(min=0)
    e = torch.repeat_interleave(torch.arange(len(rows), device=device), rows)
    r = lo[e] + _ramp(rows)
    yc = r.to(vertices.dtype) + 0.5
    xc = a[e, 0] + (yc - a[e, 1]) * (c[e, 0] - a[e, 0]) / (c[e, 1] - a[e, 1])
    col = (torch.floor(xc - 0.5) + 1).clamp(0, width).long()
    crossing_poly = edge_poly[e]
    per_pass = max(1, CHUNK_ELEMENTS // (height * (width + 1)))
    target = b * objects + obj
    for start in range(0, len(n), per_pass):
        stop = min(start + per_pass, len(n))
        sel = (crossing_poly >= start) & (crossing_poly < stop)
        grid = torch.zeros((stop - start, height, width + 1), dtype=torch.int32, device=device)
        ones = torch.ones(int(sel.sum()), dtype=torch.int32, device=device)
        grid.index_put_((crossing_poly[sel] - start, r[sel], col[sel]), ones, accumulate=True)
        inside = (torch.cumsum(grid, 2)[..., :width] & 1).to(torch.uint8)
        masks.index_put_((target[start:stop],), inside, accumulate=True)  # union of an object's polygons
    return masks.view(polygons.shape[0], objects, height, width) > 0
