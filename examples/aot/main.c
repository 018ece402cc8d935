/* Trains the digits MLP of examples/models/mlp_digits.kiln in plain C, with the
 * object file that `kiln compile --train --embed-weights` made: no kiln at run time,
 * only libc. Reads the UCI digits as CSV (64 pixels 0..16 and a label per line),
 * trains on the first 1437 for a few epochs with mlp_train, then measures the
 * accuracy of mlp_infer on the other 360.
 *
 *   make                    # compiles the model and this program, then runs it
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlp.h"

#define EXAMPLES 1797
#define TRAIN 1437
#define FEATURES 64
#define BATCH ((int)MLP_TRAIN_LABELS_LEN)
#define EPOCHS 20

static float pixels[EXAMPLES][FEATURES];
static int32_t labels[EXAMPLES];

/* A fixed-seed xorshift generator for the order of the examples in each epoch. */
static uint32_t next_random(uint32_t *state) {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    return *state;
}

/* Reads the CSV file; returns the number of examples read. */
static int read_digits(const char *path) {
    FILE *file = fopen(path, "r");
    if (!file) {
        perror(path);
        return 0;
    }
    int n = 0;
    while (n < EXAMPLES) {
        int value = 0;
        for (int i = 0; i < FEATURES; i++) {
            if (fscanf(file, "%d,", &value) != 1) {
                fclose(file);
                return n;
            }
            pixels[n][i] = (float)value / 16.0f;
        }
        if (fscanf(file, "%d", &value) != 1) break;
        labels[n++] = value;
    }
    fclose(file);
    return n;
}

int main(int argc, char **argv) {
    if (mlp_abi_version() != MLP_ABI_VERSION) {
        fprintf(stderr, "mlp.o does not match mlp.h\n");
        return 1;
    }
    if (argc != 2 || read_digits(argv[1]) != EXAMPLES) {
        fprintf(stderr, "usage: %s digits.csv (%d examples)\n", argv[0], EXAMPLES);
        return 1;
    }
    size_t bytes = MLP_TRAIN_WORKSPACE_BYTES > MLP_INFER_WORKSPACE_BYTES
                       ? MLP_TRAIN_WORKSPACE_BYTES
                       : MLP_INFER_WORKSPACE_BYTES;
    void *workspace = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!workspace) return 1;

    static float logits[MLP_TRAIN_LOGITS_LEN];
    static float batch_pixels[BATCH][FEATURES];
    static int32_t batch_labels[BATCH];
    static int order[TRAIN];
    for (int i = 0; i < TRAIN; i++) order[i] = i;
    uint32_t seed = 2026;
    float loss = 0.0f;
    for (int epoch = 0; epoch < EPOCHS; epoch++) {
        for (int i = TRAIN - 1; i > 0; i--) { /* Fisher-Yates */
            int j = (int)(next_random(&seed) % (uint32_t)(i + 1));
            int t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        double total = 0.0;
        int batches = 0;
        for (int start = 0; start + BATCH <= TRAIN; start += BATCH) {
            for (int b = 0; b < BATCH; b++) {
                memcpy(batch_pixels[b], pixels[order[start + b]], sizeof batch_pixels[b]);
                batch_labels[b] = labels[order[start + b]];
            }
            mlp_train_args args = {&batch_pixels[0][0], batch_labels, logits, &loss};
            if (mlp_train(&args, workspace) != 0) return 1;
            total += loss;
            batches++;
        }
        printf("epoch %d: mean loss %.4f\n", epoch + 1, total / batches);
    }

    /* The same weights (embedded in the object, updated by mlp_train) in the
     * forward pass, one batch of held-out examples at a time. */
    int correct = 0, seen = 0;
    for (int start = TRAIN; start + BATCH <= EXAMPLES; start += BATCH) {
        mlp_infer_args args = {&pixels[start][0], &labels[start], logits, &loss};
        if (mlp_infer(&args, workspace) != 0) return 1;
        for (int b = 0; b < BATCH; b++) {
            int best = 0;
            for (int k = 1; k < 10; k++)
                if (logits[b * 10 + k] > logits[b * 10 + best]) best = k;
            correct += best == labels[start + b];
            seen++;
        }
    }
    printf("test accuracy %.4f (%d of %d)\n", (double)correct / seen, correct, seen);
    free(workspace);
    return 0;
}
