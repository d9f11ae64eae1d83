/* (to be written) */
#include "helpers.h"
#include <stdlib.h>
int main(void) { return EXIT_SUCCESS; }
