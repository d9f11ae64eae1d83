/* (being written) */
#include "internal.h"
#include "loopsvc-redis.h"
