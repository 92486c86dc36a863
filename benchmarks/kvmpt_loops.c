/*
 * Plain C loops doing the same work as kvmpt's Numba kernels, for `kvmpt bench`.
 *
 * The same data layout (struct of arrays, the ptable as an hlist in arrays with
 * an occupancy bitmap) and the same algorithm as kvmpt/kernels/{writes,walk}.py,
 * so the benchmark compares code generation, not algorithms.  Compiled at bench
 * time with the system `cc -O2 -shared -fPIC` into a temporary directory and
 * called through ctypes on the very arrays the kernels see.
 */
#include <stdint.h>

#define GOLDEN_RATIO_64 0x61C8864680B583EBull

static inline uint64_t hash_64(uint64_t val, unsigned shift)
{
	return (val * GOLDEN_RATIO_64) >> shift;
}

static inline int occ_test(const uint64_t *occ, uint64_t h)
{
	return (occ[h >> 6] >> (h & 63)) & 1;
}

static inline int64_t find_slot(const uint64_t *base, const uint64_t *npages, int64_t n,
				uint64_t gfn, int64_t hint)
{
	int64_t lo = 0, hi = n, i;

	if (hint >= 0 && hint < n && gfn >= base[hint] && gfn - base[hint] < npages[hint])
		return hint;
	while (lo < hi) {
		int64_t mid = (lo + hi) >> 1;
		if (base[mid] <= gfn)
			lo = mid + 1;
		else
			hi = mid;
	}
	i = lo - 1;
	if (i >= 0 && gfn - base[i] < npages[i])
		return i;
	return -1;
}

/* stats: direct, ignored, handled, emulated, probes, chain steps, handler calls, mmio */
void guest_write_batch(const uint64_t *gpas, int64_t n, const uint64_t *slot_base,
		       const uint64_t *slot_npages, const uint8_t *slot_trap,
		       const uint16_t *const *counters, int64_t nslots, int tracker,
		       unsigned shift, const int32_t *head, const int32_t *nxt,
		       const uint64_t *key, const uint64_t *occ, int64_t *stats)
{
	int64_t direct = 0, ignored = 0, handled = 0, emulated = 0, probes = 0, steps = 0;
	int64_t mmio = 0, hint = -1;

	for (int64_t i = 0; i < n; i++) {
		uint64_t g = gpas[i] >> 12;
		int64_t si = find_slot(slot_base, slot_npages, nslots, g, hint);

		if (si < 0 || !slot_trap[si]) {
			mmio++;
			continue;
		}
		hint = si;
		if (counters[si][g - slot_base[si]] == 0) {
			direct++;
			continue;
		}
		emulated++;
		if (!tracker) {
			ignored++;
			continue;
		}
		probes++;
		uint64_t h = hash_64(g, shift);
		int found = 0;
		if (occ_test(occ, h)) {
			for (int32_t node = head[h]; node >= 0; node = nxt[node]) {
				steps++;
				if (key[node] == g) {
					found = 1;
					break;
				}
			}
		}
		if (found)
			handled++;
		else
			ignored++;
	}
	stats[0] = direct;
	stats[1] = ignored;
	stats[2] = handled;
	stats[3] = emulated;
	stats[4] = probes;
	stats[5] = steps;
	stats[6] = handled;
	stats[7] = mmio;
}

/* The slot hook's loop; out: hits, chain steps.  Deletes hits when `delete`. */
void slot_walk(uint64_t base_gfn, int64_t npages, unsigned shift, int32_t *head, int32_t *nxt,
	       const uint64_t *key, int32_t *clen, uint64_t *occ, int delete, uint64_t *hits,
	       int64_t *out)
{
	int64_t nh = 0, steps = 0;
	uint64_t g = base_gfn;

	for (int64_t i = 0; i < npages; i++, g++) {
		uint64_t h = hash_64(g, shift);
		if (!occ_test(occ, h))
			continue;
		int32_t prev = -1;
		for (int32_t node = head[h]; node >= 0; prev = node, node = nxt[node]) {
			steps++;
			if (key[node] != g)
				continue;
			hits[nh++] = g;
			if (delete) {
				if (prev < 0)
					head[h] = nxt[node];
				else
					nxt[prev] = nxt[node];
				nxt[node] = -1;
				if (--clen[h] == 0)
					occ[h >> 6] &= ~(1ull << (h & 63));
			}
			break;
		}
	}
	out[0] = nh;
	out[1] = steps;
}
