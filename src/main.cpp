#include "app/app.h"

int main(int argc, char** argv) { return ig::app::run_cli(argc, argv); }
