/* (being written) */
#include "internal.h"
#include "loopsvc-pg.h"
