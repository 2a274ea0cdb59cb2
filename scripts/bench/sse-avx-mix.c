/* Does SHA-NI (legacy-SSE encoded) overlap with 256-bit AVX2 work in one loop on this CPU?
 *
 *     gcc -O2 -mavx2 -msha scripts/bench/sse-avx-mix.c -o /tmp/sse-avx-mix
 *     for m in 1 2 3; do /tmp/sse-avx-mix $m; done
 *
 * Mode 1: four independent sha256rnds2 chains; mode 2: six independent AVX2 rotate-xor-add
 * chains; mode 3: both in the same loop. Prints thread CPU time per iteration. On the project's
 * Zen 3 machine kind (2026-11-25): 4.2 ns, 5.2 ns and 460-475 ns, so a kernel mixing the two
 * is far slower than either alone, and ws-miner does not try. */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define N 20000000L

int main(int argc, char **argv) {
    int mode = argc > 1 ? atoi(argv[1]) : 3;
    __m128i c[4], b = _mm_set1_epi32(2), k = _mm_set1_epi32(3);
    for (int j = 0; j < 4; j++) c[j] = _mm_set1_epi32(j);
    __m256i v[6], s = _mm256_set1_epi32(7);
    for (int j = 0; j < 6; j++) v[j] = _mm256_set1_epi32(j + 1);
    double t0 = cpu_seconds();
    for (long i = 0; i < N; i++) {
        if (mode & 1)
            for (int j = 0; j < 4; j++) c[j] = _mm_sha256rnds2_epu32(c[j], b, k);
        if (mode & 2)
            for (int j = 0; j < 6; j++) {
                __m256i x = v[j];
                __m256i r = _mm256_or_si256(_mm256_srli_epi32(x, 6), _mm256_slli_epi32(x, 26));
                v[j] = _mm256_add_epi32(_mm256_xor_si256(r, x), s);
            }
    }
    double t1 = cpu_seconds();
    int sink = 0;
    for (int j = 0; j < 4; j++) sink += _mm_cvtsi128_si32(c[j]);
    for (int j = 0; j < 6; j++) sink += _mm256_extract_epi32(v[j], 0);
    printf("mode %d: %.2f ns per iteration (%d)\n", mode, (t1 - t0) * 1e9 / N, sink);
    return 0;
}
